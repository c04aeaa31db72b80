"""bench/soak.py works end to end (on the tiny bundle, a few hundred calls; not a timing test) and
draws the workload it promises: batch sizes 1-64, lengths 1 to the max, some at it, some chunked."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from soak import TextPool, plan_call, soak  # noqa: E402

from edge_embed import Embedder  # noqa: E402


def test_the_calls_cover_the_promised_shapes(bundle):
    tokenizer = Tokenizer.from_file(str(bundle("nomic-v15-tiny") / "tokenizer.json"))
    pool = TextPool(tokenizer, 512, seed=1, runs=8)
    rng = np.random.default_rng(1)
    calls = [plan_call(rng, pool, 64, 768, 64) for _ in range(600)]
    sizes = [len(c["texts"]) for c in calls]
    assert min(sizes) == 1 and max(sizes) == 64
    plain = [c for c in calls if c["truncation"] == "truncate"]
    lengths = [len(e.ids) for c in plain for e in tokenizer.encode_batch(c["texts"])]
    assert min(lengths) == 3 and max(lengths) == 512  # [CLS] one token [SEP] .. the max length
    assert 0.03 < np.mean(np.array(lengths) == 512) < 0.08
    chunked = [c for c in calls if c["truncation"] == "chunk"]
    assert 10 < len(chunked) < 60
    assert all(len(e.ids) > 512 for c in chunked for e in tokenizer.encode_batch(c["texts"]))


def test_a_short_soak_reports_rss_and_speed(bundle, tmp_path):
    model = Embedder(bundle("nomic-v15-tiny"), precision="int8", max_length=64, threads=1)
    lines = []
    result = soak(model, calls=120, sample_every=40, seed=2, max_batch=8, log=lambda *a, **k: lines.append(a[0]),
                  partial=tmp_path / "partial.json")
    assert result["calls"] == 120 and result["tokens"] > 120
    assert [s["call"] for s in result["samples"]] == [1, 10, 40, 80, 100, 120]
    assert result["rss_mb_after_100"] > 50 and "within_5_percent" in result
    assert (tmp_path / "partial.json").exists() and len(lines) == 6
