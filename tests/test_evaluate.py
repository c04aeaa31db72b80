"""Metric and loader tests for edge_embed.evaluate, with fake models (no ONNX needed).

Expected numbers are worked out by hand in the comments next to them.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from edge_embed.errors import EdgeEmbedError
from edge_embed.evaluate import (
    embed_chunked,
    evaluate,
    load_retrieval,
    load_sts_pairs,
    ndcg_at_k,
    rankdata_average,
    recall_at_k,
    retrieval_ndcg,
    spearman,
    sts_spearman,
    top_k,
)
from edge_embed.progress import Progress

# ---------------------------------------------------------------------------- fake models


class HashCharModel:
    """Bag of characters hashed into ``dim`` (default 64) dims, L2-normalized.
    Deterministic across runs (uses ord, not the salted str hash). Records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str | None, int | None]] = []

    def embed(self, texts, task=None, dim=None):
        self.calls.append((len(texts), task, dim))
        width = dim or 64
        out = np.zeros((len(texts), width), dtype=np.float32)
        for i, text in enumerate(texts):
            for ch in text:
                out[i, (ord(ch) * 2654435761) % width] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class TableModel:
    """Looks each text up in a table of vectors, so every cosine is chosen by the test.
    A KeyError means a loader produced a text other than the one written to disk."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = {t: np.asarray(v, dtype=np.float32) for t, v in table.items()}
        self.tasks: list[str | None] = []

    def embed(self, texts, task=None, dim=None):
        self.tasks.append(task)
        out = np.stack([self.table[t] for t in texts])
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _write_tsv(path: Path, header: str, rows: list[tuple]) -> Path:
    lines = [header] + ["\t".join(str(f) for f in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _write_jsonl(path: Path, objs: list[dict]) -> None:
    path.write_text(
        "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs), encoding="utf-8"
    )


# ---------------------------------------------------------------------------- Spearman


def test_rankdata_average_ties_by_hand():
    np.testing.assert_array_equal(rankdata_average(np.array([10, 20, 20, 30])), [1, 2.5, 2.5, 4])
    np.testing.assert_array_equal(rankdata_average(np.array([3.0, 1.0, 2.0])), [3, 1, 2])
    np.testing.assert_array_equal(rankdata_average(np.array([7, 7, 7])), [2, 2, 2])
    # Three-way tie at the top, positions 2..4 -> mean 3.
    np.testing.assert_array_equal(rankdata_average(np.array([0.1, 5, 5, 5])), [1, 3, 3, 3])


def test_spearman_by_hand():
    # ranks x = [1, 2.5, 2.5, 4], ranks y = [1, 3, 2, 4]; both means 2.5
    # dx = [-1.5, 0, 0, 1.5], dy = [-1.5, .5, -.5, 1.5]
    # cov = 4.5, var_x = 4.5, var_y = 5  ->  rho = 4.5 / sqrt(22.5) = 0.9486832980505138
    rho = spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0, 4.0]))
    assert rho == pytest.approx(0.9486832980505138, abs=1e-12)
    assert spearman(np.array([1, 2, 3]), np.array([10, 20, 30])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3]), np.array([30, 20, 10])) == pytest.approx(-1.0)
    assert math.isnan(spearman(np.array([1, 1, 1]), np.array([1, 2, 3])))


def test_spearman_matches_scipy_when_available():
    from scipy import stats  # test-only reference ([test] extra); not a runtime dep
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(3, 200))
        x = rng.integers(0, 6, n).astype(np.float64)  # few values: many ties
        y = x + rng.normal(0, 2, n).round(1)
        np.testing.assert_allclose(rankdata_average(x), stats.rankdata(x, method="average"))
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def _sts_fixture(tmp_path: Path) -> tuple[Path, TableModel]:
    # Every pair compares against the same first sentence (vector e0), so the cosine of
    # pair i is the first coordinate of its second sentence's unit vector.
    s = math.sqrt(0.75)
    table = {
        'He said "hi" to me.': [1.0, 0.0],
        "cos 0.9": [0.9, math.sqrt(1 - 0.81)],
        '"Quoted" at the start': [0.5, s],
        'a 5" screen, one quote': [0.5, -s],  # same cosine as above: a tie
        "cos 0.1": [0.1, math.sqrt(1 - 0.01)],
    }
    base = 'He said "hi" to me.'
    rows = [
        (base, "cos 0.9", "4.000"),
        (base, '"Quoted" at the start', "2.500"),
        (base, 'a 5" screen, one quote', "3.000"),
        (base, "cos 0.1", "2.500"),
    ]
    path = _write_tsv(tmp_path / "pairs.tsv", "sentence1\tsentence2\tscore", rows)
    return path, TableModel(table)


def test_sts_spearman_by_hand_with_ties(tmp_path):
    path, model = _sts_fixture(tmp_path)
    # cosines [0.9, 0.5, 0.5, 0.1] -> ranks [4, 2.5, 2.5, 1]
    # gold    [4.0, 2.5, 3.0, 2.5] -> ranks [4, 1.5, 3, 1.5]
    # dx = [1.5, 0, 0, -1.5], dy = [1.5, -1, .5, -1]: cov = 3.75, var_x = var_y = 4.5
    # rho = 3.75 / 4.5 = 5/6
    result = sts_spearman(model, path, progress=False)
    assert result == {"spearman": pytest.approx(5 / 6, abs=1e-6), "pairs": 4}
    assert set(model.tasks) == {"classification"}


def test_sts_limit_and_task(tmp_path):
    path, model = _sts_fixture(tmp_path)
    # First two pairs: cosines [0.9, 0.5], gold [4.0, 2.5] -> rho = 1.
    result = sts_spearman(model, path, limit=2, progress=False, task=None)
    assert result == {"spearman": pytest.approx(1.0), "pairs": 2}
    assert set(model.tasks) == {None}


def test_load_sts_pairs_keeps_quotes(tmp_path):
    path, _ = _sts_fixture(tmp_path)
    s1, s2, gold = load_sts_pairs(path)
    assert s1 == ['He said "hi" to me.'] * 4
    assert s2 == ["cos 0.9", '"Quoted" at the start', 'a 5" screen, one quote', "cos 0.1"]
    np.testing.assert_array_equal(gold, [4.0, 2.5, 3.0, 2.5])
    assert gold.dtype == np.float64


def test_load_sts_pairs_rejects_bad_files(tmp_path):
    bad_header = tmp_path / "h.tsv"
    bad_header.write_text("a,b,score\nx\ty\t1.0\n", encoding="utf-8")
    with pytest.raises(EdgeEmbedError, match="header"):
        load_sts_pairs(bad_header)
    bad_row = _write_tsv(tmp_path / "r.tsv", "sentence1\tsentence2\tscore", [("x", "1.0")])
    with pytest.raises(EdgeEmbedError, match=r"r\.tsv:2"):
        load_sts_pairs(bad_row)


# ---------------------------------------------------------------------------- nDCG / recall


def test_ndcg_ideal_is_one():
    rels = {"d1": 2, "d2": 1}
    assert ndcg_at_k(["d1", "d2", "x", "y"], rels, 10) == pytest.approx(1.0)
    # Equal grades in either order are both ideal.
    assert ndcg_at_k(["b", "a"], {"a": 1, "b": 1}, 10) == pytest.approx(1.0)


def test_ndcg_bad_ranking_by_hand_linear_gain():
    # rels d1=2, d2=1; ranking d3, d2, d4, d1 -> gains 0, 1, 0, 2 at ranks 1..4
    # DCG  = 1/log2(3) + 2/log2(5)          = 0.6309298 + 0.8613531
    # IDCG = 2/log2(2) + 1/log2(3)          = 2 + 0.6309298
    # nDCG = 1.4922829 / 2.6309298          = 0.5672074169568709
    # (The 2^rel - 1 gain would give 0.5296; trec_eval/BEIR use the linear one.)
    rels = {"d1": 2, "d2": 1}
    assert ndcg_at_k(["d3", "d2", "d4", "d1"], rels, 10) == pytest.approx(
        0.5672074169568709, abs=1e-12
    )


def test_ndcg_cutoff_and_missing_relevant():
    # The only relevant doc at rank 11 is past the cutoff.
    ranked = [f"x{i}" for i in range(10)] + ["r"]
    assert ndcg_at_k(ranked, {"r": 1}, 10) == 0.0
    # A relevant doc that was never retrieved still counts in the ideal DCG:
    # DCG = 1, IDCG = 1 + 1/log2(3) -> 1 / 1.6309298 = 0.6131471927654584
    assert ndcg_at_k(["a", "x"], {"a": 1, "b": 1}, 10) == pytest.approx(0.6131471927654584)
    # Judged non-relevant (0) docs neither add gain nor enter the ideal.
    assert ndcg_at_k(["z", "a"], {"a": 1, "z": 0}, 10) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k(["a"], {"a": 0}, 10) == 0.0


def test_recall_at_k():
    assert recall_at_k(["a", "x", "b"], {"a": 1, "b": 2, "c": 1, "z": 0}, 2) == pytest.approx(1 / 3)
    assert recall_at_k(["a", "x", "b"], {"a": 1, "b": 2, "c": 1}, 3) == pytest.approx(2 / 3)


def test_top_k_orders_by_dot_product():
    docs = np.eye(4, dtype=np.float32)
    q = np.array([[0.1, 0.4, 0.3, 0.2], [1.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    ranked = top_k(q, docs, 3)
    np.testing.assert_array_equal(ranked[0], [1, 2, 3])
    assert ranked[1, 0] == 0  # the rest of row 1 are ties at 0, in any order
    assert top_k(q, docs, 100).shape == (2, 4)  # k larger than the corpus


# ---------------------------------------------------------------------------- retrieval end to end


def _retrieval_fixture(tmp_path: Path) -> tuple[Path, TableModel]:
    folder = tmp_path / "beir"
    folder.mkdir()
    corpus = [
        {"_id": "d1", "title": "", "text": "exact match for q1"},
        {"_id": "da", "title": "Alpha", "text": "first for q2"},
        {"_id": "db", "title": "", "text": 'second for q2, "quoted"'},
        {"_id": "dc", "title": "Gamma  ", "text": "third"},
        {"_id": "dd", "title": "Δelta", "text": ""},
    ]
    _write_jsonl(folder / "corpus.jsonl", corpus)
    queries = [
        {"_id": "q1", "text": "query one"},
        {"_id": "q2", "text": 'query "two"'},
        {"_id": "q3", "text": "only judged non-relevant"},
        {"_id": "q4", "text": "not in qrels at all"},
    ]
    _write_jsonl(folder / "queries.jsonl", queries)
    _write_tsv(
        folder / "qrels.tsv",
        "query-id\tcorpus-id\tscore",
        [("q1", "d1", 1), ("q2", "dd", 2), ("q2", "db", 1), ("q3", "dc", 0)],
    )

    def unit(c: float, axis: int = 1) -> list[float]:
        v = [0.0, 0.0, 0.0, 0.0]
        v[axis], v[2] = c, math.sqrt(1 - c * c)
        return v

    table = {
        "query one": [1.0, 0.0, 0.0, 0.0],
        'query "two"': [0.0, 1.0, 0.0, 0.0],
        # Document texts as BEIR joins them: (title + " " + text).strip().
        "exact match for q1": [1.0, 0.0, 0.0, 0.0],
        "Alpha first for q2": unit(0.9),  # q2 scores 0.9, 0.8, 0.7, 0.6
        'second for q2, "quoted"': unit(0.8),
        "Gamma   third": unit(0.7),
        "Δelta": unit(0.6),
        "only judged non-relevant": [0.0, 0.0, 0.0, 1.0],
        "not in qrels at all": [0.0, 0.0, 0.0, 1.0],
    }
    return folder, TableModel(table)


def test_load_retrieval_parses_titles_quotes_and_qrels(tmp_path):
    folder, _ = _retrieval_fixture(tmp_path)
    data = load_retrieval(folder)
    assert data.doc_ids == ["d1", "da", "db", "dc", "dd"]
    assert data.doc_texts == [
        "exact match for q1",  # empty title: no leading space
        "Alpha first for q2",
        'second for q2, "quoted"',
        "Gamma   third",  # inner spaces kept, only the ends stripped
        "Δelta",  # empty text: no trailing space, non-ASCII intact
    ]
    assert data.query_ids == ["q1", "q2", "q3", "q4"]
    assert data.query_texts[1] == 'query "two"'
    assert data.qrels == {"q1": {"d1": 1}, "q2": {"dd": 2, "db": 1}, "q3": {"dc": 0}}


def test_retrieval_ndcg_by_hand(tmp_path):
    folder, model = _retrieval_fixture(tmp_path)
    result = retrieval_ndcg(model, folder, progress=False)
    # q1: its only relevant doc is ranked first -> 1.0
    # q2: ranking da, db, dc, dd with db=1 and dd=2 -> gains 0, 1, 0, 2 -> 0.5672074169568709
    # q3 (only rel 0) and q4 (no qrels) are skipped.
    assert result == {
        "ndcg@10": pytest.approx((1.0 + 0.5672074169568709) / 2, abs=1e-6),
        "recall@100": pytest.approx(1.0),
        "queries": 2,
        "docs": 5,
    }
    # Docs embedded first with the document task, then the queries.
    assert model.tasks == ["search_document", "search_query"]


def test_retrieval_k_and_recall_cutoff(tmp_path):
    folder, model = _retrieval_fixture(tmp_path)
    result = retrieval_ndcg(model, folder, k=2, progress=False)
    # q2 at k=2: DCG = 1/log2(3); IDCG@2 = 2 + 1/log2(3) -> 0.6309298 / 2.6309298
    q2 = (1 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert result["ndcg@2"] == pytest.approx((1.0 + q2) / 2, abs=1e-6)


def test_retrieval_limit_docs_keeps_relevant_first(tmp_path):
    folder, model = _retrieval_fixture(tmp_path)
    # Relevant docs d1, db, dd come first; one more slot takes da (corpus order).
    # q2 ranking da, db, dd: gains 0, 1, 2 -> DCG = 1/log2(3) + 2/log2(4) = 0.6309298 + 1
    result = retrieval_ndcg(model, folder, limit_docs=4, progress=False)
    q2 = (1 / math.log2(3) + 1.0) / (2 + 1 / math.log2(3))
    assert result["docs"] == 4
    assert result["ndcg@10"] == pytest.approx((1.0 + q2) / 2, abs=1e-6)
    # Too few slots for all relevant docs: dd is dropped from q2's qrels.
    # Kept d1, db: q2 ranks db first and db is now its only relevant doc -> 1.0
    result = retrieval_ndcg(model, folder, limit_docs=2, progress=False)
    assert result == {"ndcg@10": pytest.approx(1.0), "recall@100": 1.0, "queries": 2, "docs": 2}


# ---------------------------------------------------------------------------- chunking, evaluate


def test_embed_chunked_order_and_chunks():
    model = HashCharModel()
    texts = [f"text {i}" for i in range(7)]
    out = embed_chunked(model, texts, "search_document", None, "t", progress=False, chunk=3)
    assert [c[0] for c in model.calls] == [3, 3, 1]
    np.testing.assert_array_equal(out, HashCharModel().embed(texts))
    assert out.dtype == np.float32 and out.shape == (7, 64)


def test_embed_chunked_silences_inner_progress():
    class WithProgress(HashCharModel):
        def embed(self, texts, task=None, dim=None, progress=None):
            self.seen = progress
            return super().embed(texts, task, dim)

    model = WithProgress()
    embed_chunked(model, ["a", "b"], None, None, "t", progress=False)
    assert model.seen is False


def test_evaluate_with_hash_model(tmp_path):
    # Identical texts embed identically, so STS on pairs (t, t) / (t, other) is ordered
    # and queries equal to their document are found first.
    sts = _write_tsv(
        tmp_path / "pairs.tsv",
        "sentence1\tsentence2\tscore",
        [("cat", "cat", "5.000"), ("dog", "xyz", "0.000"), ("bird", "birds", "4.000")],
    )
    folder = tmp_path / "ret"
    folder.mkdir()
    words = ["apple", "banana", "cherry", "quartz", "mxyz"]
    _write_jsonl(folder / "corpus.jsonl", [{"_id": w, "title": "", "text": w} for w in words])
    _write_jsonl(folder / "queries.jsonl", [{"_id": f"q{w}", "text": w} for w in words[:3]])
    qrels = [(f"q{w}", w, 1) for w in words[:3]]
    _write_tsv(folder / "qrels.tsv", "query-id\tcorpus-id\tscore", qrels)

    model = HashCharModel()
    result = evaluate(model, sts, folder, dim=32, progress=False)
    assert result["sts"] == {"spearman": pytest.approx(1.0), "pairs": 3}
    assert result["retrieval"] == {
        "ndcg@10": pytest.approx(1.0),
        "recall@100": pytest.approx(1.0),
        "queries": 3,
        "docs": 5,
    }
    assert {c[2] for c in model.calls} == {32}
    assert evaluate(model, None, None) == {}
    assert evaluate(model, sts, None, limit=2, progress=False)["sts"]["pairs"] == 2


# ---------------------------------------------------------------------------- progress


def test_progress_disabled_prints_nothing(capsys):
    with Progress(10_000_000, "x", enabled=False) as bar:
        bar.update(5)
    assert capsys.readouterr().err == ""


def test_progress_non_tty_default_small_is_silent():
    stream = io.StringIO()  # not a TTY
    with Progress(10, "x", stream=stream) as bar:
        bar.update(10)
    assert stream.getvalue() == ""


def test_progress_enabled_writes_plain_lines_off_tty():
    stream = io.StringIO()
    with Progress(300, "corpus", enabled=True, stream=stream) as bar:
        for _ in range(3):
            bar.update(100)
    text = stream.getvalue()
    assert "\r" not in text and text.endswith("\n")
    last = text.strip().splitlines()[-1]
    assert last.startswith("corpus [") and "300/300" in last and "100%" in last and "/s" in last


def test_progress_survives_closed_stream():
    stream = io.StringIO()
    stream.close()
    with Progress(0, "x", enabled=True, stream=stream) as bar:
        bar.update(3)  # must not raise
    assert not bar.enabled  # a failed write silences the bar for good


def test_progress_line_shows_eta_midway():
    bar = Progress(100, "docs", enabled=False)
    bar.update(25)
    line = bar.line(now=bar._start + 5.0)  # 25 items in 5 s: 5.0/s, 75 left -> 15 s
    assert line == "docs [######..................] 25/100  25%  5.0/s  ETA 0:15"
