"""Evaluate an embedding model on STS and BEIR-style retrieval, with numpy only.

The model is any object with
``embed(texts: list[str], task: str | None = None, dim: int | None = None) -> np.ndarray``
returning float32 rows of shape (n, dim) with unit L2 norm.

Data layouts (those of the public datasets as ``scripts/eval_data.py`` and docs/eval_data.md describe them):

* STS ``pairs.tsv``: header ``sentence1<TAB>sentence2<TAB>score``, no quoting.
* Retrieval folder: ``corpus.jsonl`` ({"_id", "title", "text"}), ``queries.jsonl``
  ({"_id", "text"}) and ``qrels.tsv`` (header ``query-id<TAB>corpus-id<TAB>score``).

Metrics follow the tools the published numbers come from: Spearman with average ranks
for ties (as ``scipy.stats.spearmanr``), and nDCG@k / recall@k as BEIR computes them
through pytrec_eval (trec_eval's ``ndcg_cut`` and ``recall``).
"""

from __future__ import annotations

import inspect
import json
import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import EdgeEmbedError, TruncationWarning
from .progress import Progress

CHUNK = 256  # texts per embed() call: small enough for a lively progress bar
RECALL_K = 100
_SCORE_BLOCK = 1024  # queries scored at once, bounds the (queries, docs) score matrix


class EmbeddingModel(Protocol):
    def embed(
        self, texts: list[str], task: str | None = None, dim: int | None = None
    ) -> np.ndarray: ...


# ---------------------------------------------------------------------------- loaders


def _data_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file without line endings; blank lines dropped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise EdgeEmbedError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise EdgeEmbedError(f"{path} is not UTF-8 text") from None
    return [line.rstrip("\r") for line in text.split("\n") if line.strip("\r")]


def _tsv_rows(path: Path, header: Sequence[str]) -> list[list[str]]:
    """Rows of a tab-separated file with the given header. No quote handling on purpose:
    the files are unquoted and sentences may contain ``"``."""
    lines = _data_lines(path)
    if not lines or lines[0].split("\t") != list(header):
        raise EdgeEmbedError(f"{path}: expected header {'<TAB>'.join(header)!r}")
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header):
            raise EdgeEmbedError(
                f"{path}:{lineno}: expected {len(header)} tab-separated fields, "
                f"got {len(fields)}"
            )
        rows.append(fields)
    return rows


def load_sts_pairs(
    path: Path, limit: int | None = None
) -> tuple[list[str], list[str], np.ndarray]:
    """Read an STS ``pairs.tsv``.

    Returns (sentence1 list of n, sentence2 list of n, gold scores float64 (n,)),
    keeping the first ``limit`` pairs when given.
    """
    rows = _tsv_rows(path, ("sentence1", "sentence2", "score"))[:limit]
    try:
        scores = np.array([float(r[2]) for r in rows], dtype=np.float64)
    except ValueError as e:
        raise EdgeEmbedError(f"{path}: bad score: {e}") from None
    return [r[0] for r in rows], [r[1] for r in rows], scores


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    for lineno, line in enumerate(_data_lines(path), start=1):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise EdgeEmbedError(f"{path}:{lineno}: bad JSON: {e}") from None
    return out


@dataclass
class RetrievalSet:
    """A BEIR-style set: doc_ids/doc_texts (parallel, n_docs), query_ids/query_texts
    (parallel, n_queries) and qrels {query_id: {doc_id: relevance}}."""

    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]


def load_retrieval(folder: Path) -> RetrievalSet:
    """Read ``corpus.jsonl``, ``queries.jsonl`` and ``qrels.tsv`` from ``folder``.

    A document is encoded as ``(title + " " + text).strip()``, as BEIR and MTEB do.
    """
    folder = Path(folder)
    docs = _read_jsonl(folder / "corpus.jsonl")
    doc_ids = [str(d["_id"]) for d in docs]
    doc_texts = [((d.get("title") or "") + " " + (d.get("text") or "")).strip() for d in docs]
    queries = _read_jsonl(folder / "queries.jsonl")
    qrels: dict[str, dict[str, int]] = {}
    for qid, did, score in _tsv_rows(folder / "qrels.tsv", ("query-id", "corpus-id", "score")):
        qrels.setdefault(qid, {})[did] = int(score)
    return RetrievalSet(
        doc_ids=doc_ids,
        doc_texts=doc_texts,
        query_ids=[str(q["_id"]) for q in queries],
        query_texts=[q["text"] for q in queries],
        qrels=qrels,
    )


def _limit_corpus(data: RetrievalSet, limit_docs: int) -> RetrievalSet:
    """Keep at most ``limit_docs`` documents: judged-relevant ones first, then others, each
    in corpus order. Taking the first N lines instead would drop most relevant documents
    and leave nothing to find. Qrels of dropped documents are removed, so the score is
    that of an easier task, not comparable with a full-corpus score."""
    relevant = {d for rels in data.qrels.values() for d, r in rels.items() if r > 0}
    order = [i for i, d in enumerate(data.doc_ids) if d in relevant]
    order += [i for i, d in enumerate(data.doc_ids) if d not in relevant]
    keep = sorted(order[:limit_docs])
    kept = {data.doc_ids[i] for i in keep}
    qrels = {q: {d: r for d, r in rels.items() if d in kept} for q, rels in data.qrels.items()}
    return RetrievalSet(
        doc_ids=[data.doc_ids[i] for i in keep],
        doc_texts=[data.doc_texts[i] for i in keep],
        query_ids=data.query_ids,
        query_texts=data.query_texts,
        qrels=qrels,
    )


# ---------------------------------------------------------------------------- metrics


def rankdata_average(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties sharing the mean of their ranks.

    (n,) -> float64 (n,); the same as ``scipy.stats.rankdata(x, method="average")``.
    """
    x = np.asarray(x).ravel()
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    # The tied group g covers sorted positions start_g+1 .. start_g+count_g; mean = start + (c+1)/2.
    starts = np.cumsum(counts) - counts
    return (starts + (counts + 1) / 2.0)[inverse.ravel()].astype(np.float64)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho of two (n,) arrays: Pearson correlation of their average ranks.

    NaN when either side is constant (no ranking to correlate), as scipy does.
    """
    rx = rankdata_average(x)
    ry = rankdata_average(y)
    if rx.shape != ry.shape:
        raise ValueError(f"shape mismatch: {rx.shape} vs {ry.shape}")
    rx -= rx.mean()
    ry -= ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / denom if denom > 0 else float("nan")


def ndcg_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    """nDCG@k of one ranked list of doc ids against graded qrels {doc_id: relevance}.

    Linear gain, as trec_eval's ``ndcg_cut`` (which BEIR and MTEB call through
    pytrec_eval) computes it -- not the 2^rel - 1 "exponential" gain:
        DCG@k = sum over rank r = 1..k of rel(d_r) / log2(r + 1)
    The ideal DCG sorts all judged relevant docs (rel > 0) of the query by relevance,
    including ones absent from the ranked list. 0.0 when the query has no relevant doc.
    """
    dcg = 0.0
    for rank, doc in enumerate(ranked[:k], start=1):
        gain = rels.get(doc, 0)
        if gain > 0:
            dcg += gain / math.log2(rank + 1)
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(gain / math.log2(rank + 1) for rank, gain in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    """Share of the query's relevant docs (rel > 0) found in the top k, as trec_eval."""
    relevant = {d for d, r in rels.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


# ---------------------------------------------------------------------------- embedding


def _quiet_kwargs(model: EmbeddingModel) -> dict:
    """{"progress": False} when model.embed takes it (the runtime's Embedder does): its own
    bar per chunk would fight with ours on the same line. Plain models get nothing extra."""
    try:
        params = inspect.signature(model.embed).parameters
    except (TypeError, ValueError):  # builtins and C extensions may have no signature
        return {}
    return {"progress": False} if "progress" in params else {}


def embed_chunked(
    model: EmbeddingModel,
    texts: list[str],
    task: str | None,
    dim: int | None,
    label: str,
    progress: bool | None = None,
    chunk: int = CHUNK,
) -> np.ndarray:
    """Embed ``texts`` in chunks of ``chunk``, reporting on a progress bar.

    Returns float32 (len(texts), dim). ``progress``: True/False forces the bar,
    None shows it on a terminal or for long jobs (see ``Progress``).
    """
    parts = []
    quiet = _quiet_kwargs(model)
    with Progress(len(texts), label, enabled=progress) as bar, warnings.catch_warnings(record=True) as caught:
        # One summary line instead of a truncation warning per chunk.
        warnings.simplefilter("always", TruncationWarning)
        for start in range(0, len(texts), chunk):
            batch = texts[start : start + chunk]
            out = np.asarray(model.embed(batch, task=task, dim=dim, **quiet), dtype=np.float32)
            if out.ndim != 2 or out.shape[0] != len(batch):
                raise EdgeEmbedError(
                    f"model.embed returned shape {out.shape} for {len(batch)} texts"
                )
            parts.append(out)
            bar.update(len(batch))
    truncated = sum(getattr(w.message, "count", 0) for w in caught)
    if truncated:
        print(f"{label}: {truncated} of {len(texts)} texts were truncated to the model's max length",
              file=sys.stderr)
    if not parts:
        return np.zeros((0, dim or 0), dtype=np.float32)
    return np.concatenate(parts, axis=0)


def top_k(queries: np.ndarray, docs: np.ndarray, k: int) -> np.ndarray:
    """Exact search by dot product (= cosine, the rows being unit length).

    queries (nq, dim), docs (nd, dim) -> int64 (nq, min(k, nd)) doc indices, best first.
    """
    k = min(k, docs.shape[0])
    out = np.empty((queries.shape[0], k), dtype=np.int64)
    if k == 0:
        return out
    for start in range(0, queries.shape[0], _SCORE_BLOCK):
        scores = queries[start : start + _SCORE_BLOCK] @ docs.T  # (block, nd)
        # argpartition finds the top k in O(nd); only those k are then sorted.
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        out[start : start + _SCORE_BLOCK] = np.take_along_axis(part, order, axis=1)
    return out


# ---------------------------------------------------------------------------- tasks


def sts_spearman(
    model: EmbeddingModel,
    pairs_path: Path,
    dim: int | None = None,
    limit: int | None = None,
    progress: bool | None = None,
    task: str | None = "classification",
) -> dict:
    """Spearman correlation between cosine similarity and gold score on an STS set.

    ``task`` defaults to "classification", the Nomic convention for STS (a no-op prefix
    for plain models). Returns {"spearman": float, "pairs": int}.
    """
    s1, s2, gold = load_sts_pairs(pairs_path, limit)
    emb = embed_chunked(model, s1 + s2, task, dim, "sts", progress)
    a, b = emb[: len(s1)], emb[len(s1) :]  # (n, dim) each
    # Divide by the norms anyway: it costs nothing and keeps cosine honest if a model
    # hands back rows that are not exactly unit length.
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.einsum("ij,ij->i", a, b) / np.maximum(norms, 1e-12)
    return {"spearman": spearman(cos, gold), "pairs": len(s1)}


def retrieval_ndcg(
    model: EmbeddingModel,
    folder: Path,
    k: int = 10,
    dim: int | None = None,
    limit_docs: int | None = None,
    progress: bool | None = None,
    query_task: str | None = "search_query",
    doc_task: str | None = "search_document",
) -> dict:
    """nDCG@k and recall@100 of exact dense retrieval on a BEIR-style folder.

    Queries without any relevant doc (rel > 0) in the qrels are skipped, and only
    queries listed in ``queries.jsonl`` are scored. ``limit_docs`` keeps a smaller
    corpus (relevant docs first, see ``_limit_corpus``) for quick runs.
    Returns {"ndcg@{k}": float, "recall@100": float, "queries": int, "docs": int}.
    """
    data = load_retrieval(folder)
    if limit_docs is not None:
        data = _limit_corpus(data, limit_docs)
    # BEIR's ignore_identical_ids is not applied: MTEB leaves it off by default, and in
    # these sets query and doc ids name different things.
    judged = [
        (qid, text)
        for qid, text in zip(data.query_ids, data.query_texts)
        if any(r > 0 for r in data.qrels.get(qid, {}).values())
    ]
    qids = [qid for qid, _ in judged]
    if not qids:
        raise EdgeEmbedError(f"{folder}: no query in queries.jsonl has a relevant doc in qrels")
    doc_emb = embed_chunked(model, data.doc_texts, doc_task, dim, "corpus", progress)
    query_emb = embed_chunked(model, [t for _, t in judged], query_task, dim, "queries", progress)
    ranked_idx = top_k(query_emb, doc_emb, max(k, RECALL_K))
    ndcgs, recalls = [], []
    for qid, row in zip(qids, ranked_idx):
        ranked = [data.doc_ids[i] for i in row]
        ndcgs.append(ndcg_at_k(ranked, data.qrels[qid], k))
        recalls.append(recall_at_k(ranked, data.qrels[qid], RECALL_K))
    return {
        f"ndcg@{k}": float(np.mean(ndcgs)),
        f"recall@{RECALL_K}": float(np.mean(recalls)),
        "queries": len(qids),
        "docs": len(data.doc_ids),
    }


def evaluate(
    model: EmbeddingModel,
    sts: Path | None,
    retrieval: Path | None,
    dim: int | None = None,
    limit: int | None = None,
    progress: bool | None = None,
) -> dict:
    """Run the STS and/or retrieval evaluation; either path may be None to skip it.

    ``limit`` caps the STS pairs and the retrieval corpus size (quick runs).
    Returns {"sts": {...}, "retrieval": {...}} with the parts that ran.
    """
    results: dict = {}
    if sts is not None:
        results["sts"] = sts_spearman(model, sts, dim=dim, limit=limit, progress=progress)
    if retrieval is not None:
        results["retrieval"] = retrieval_ndcg(
            model, retrieval, dim=dim, limit_docs=limit, progress=progress
        )
    return results
