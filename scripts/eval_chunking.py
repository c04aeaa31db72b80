"""`make eval` (second part): SciFact nDCG@10 with all-MiniLM-L6-v2, for local-docs choices.

1. Documents cut into ~64-token chunks (a document scores as its best chunk): naive chunking
   (each chunk embedded alone) vs late chunking (Embedder.embed_chunks, the same spans) vs whole
   documents (truncated at the model's max length).
2. Whole documents stored as float32 vs packed sign bits alone vs bits + int8 rescoring
   (edge_embed.search, shortlist 4 x 10) vs Matryoshka-style truncation to 192 and 96 dims,
   with bytes per document.

Data: the folder `make eval` uses (--data FOLDER, default WORK/eval-data; scripts/eval_data.py).
--limit N keeps N documents (the relevant ones first): a quicker, easier task than the full one.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_data import DataError, check_data
from minilm import minilm_bundle

from edge_embed import Embedder
from edge_embed.evaluate import _limit_corpus, load_retrieval, ndcg_at_k
from edge_embed.search import int8_ranges, pack_bits, quantize_int8, search

K = 10


def ndcg(data, qids, ranked_rows) -> float:
    return float(np.mean([ndcg_at_k([data.doc_ids[i] for i in row], data.qrels[q], K)
                          for q, row in zip(qids, ranked_rows)]))


def rank_by_best_chunk(queries: np.ndarray, chunks: np.ndarray, owner: np.ndarray, n_docs: int) -> np.ndarray:
    """Each document's score is its best chunk's; returns the top K documents per query."""
    scores = np.full((len(queries), n_docs), -np.inf, dtype=np.float32)
    np.maximum.at(scores.T, owner, (chunks @ queries.T))
    return np.argsort(-scores, axis=1, kind="stable")[:, :K]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("build"))
    p.add_argument("--data", type=Path, help="folder with scifact/ (default: WORK/eval-data; make eval --fetch "
                   "downloads it)")
    p.add_argument("--limit", type=int, help="keep N documents (relevant first): a quick, easier run")
    p.add_argument("--chunk-tokens", type=int, default=64)
    p.add_argument("--precision", default="int8")
    p.add_argument("--threads", type=int)
    args = p.parse_args()
    try:
        folder = check_data(args.data or args.work / "eval-data")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data = load_retrieval(folder / "scifact")
    if args.limit:
        data = _limit_corpus(data, args.limit)
    judged = [(q, t) for q, t in zip(data.query_ids, data.query_texts) if any(data.qrels.get(q, {}).values())]
    qids = [q for q, _ in judged]
    model = Embedder(minilm_bundle(args.work), precision=args.precision, threads=args.threads)
    started = time.perf_counter()
    query_pooled = model.pooled([t for _, t in judged], model.prefix("search_query"), "truncate", False)
    queries = model.postprocess(query_pooled, model.dims[1], False)
    pooled = model.pooled(data.doc_texts, model.prefix("search_document"), "truncate", False)
    whole = model.postprocess(pooled, model.dims[1], False)
    late = model.embed_chunks(data.doc_texts, chunk_tokens=args.chunk_tokens)
    owner = np.concatenate([np.full(len(spans), d) for d, (spans, _) in enumerate(late)])
    late_vectors = np.concatenate([v for _, v in late])
    pieces = [data.doc_texts[d][a:b] for d, (spans, _) in enumerate(late) for a, b in spans]
    naive_vectors = model.embed(pieces, task="search_document")
    n = len(data.doc_ids)
    dim = model.dims[1]
    rows = {
        f"chunks of ~{args.chunk_tokens} tokens, naive (best chunk)": (
            ndcg(data, qids, rank_by_best_chunk(queries, naive_vectors, owner, n)), None),
        f"chunks of ~{args.chunk_tokens} tokens, late chunking (best chunk)": (
            ndcg(data, qids, rank_by_best_chunk(queries, late_vectors, owner, n)), None),
        "whole documents, float32": (ndcg(data, qids, np.argsort(-(queries @ whole.T), axis=1)[:, :K]), 4 * dim),
    }
    bits = pack_bits(whole)
    rows["whole documents, binary (Hamming)"] = (ndcg(data, qids, search(queries, bits, K)[0]), dim // 8)
    ranges = int8_ranges(whole)
    codes = quantize_int8(whole, ranges)
    rescored = search(queries, bits, K, rescore_with=codes, ranges=ranges, multiplier=4)[0]
    rows["whole documents, binary + int8 rescoring (x4)"] = (ndcg(data, qids, rescored), dim // 8 + dim)
    for small in (192, 96):
        docs = model.postprocess(pooled, small, False)
        q = model.postprocess(query_pooled, small, False)
        rows[f"whole documents, float32 at {small} dims"] = (ndcg(data, qids, np.argsort(-(q @ docs.T), axis=1)[:, :K]),
                                                            4 * small)
    elapsed = time.perf_counter() - started
    print(f"SciFact nDCG@10, all-MiniLM-L6-v2 ({model.precision}), {n} documents, {len(qids)} queries, "
          f"{len(owner)} chunks ({elapsed:.0f} s)")
    print("| setting | nDCG@10 | bytes / document |\n|---|---|---|")
    for name, (score, size) in rows.items():
        print(f"| {name} | {score:.4f} | {'' if size is None else size} |")
    out = args.work / "eval_chunking.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"documents": n, "queries": len(qids), "chunks": len(owner),
                               "precision": model.precision, "limit": args.limit,
                               "rows": {k: {"ndcg@10": v[0], "bytes_per_document": v[1]} for k, v in rows.items()}},
                              indent=2) + "\n", encoding="utf-8")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
