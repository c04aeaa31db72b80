"""Issue 15 figures: peak RSS of embed_stream over many short texts, relative to the loaded model,
and the time of an exact top-10 over packed 768-bit documents (edge_embed.search).

    python bench/local_docs.py --bundle build/bench/bundles/v15 [--texts 50000] [--docs 1000000]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from edge_embed import Embedder
from edge_embed.measure import peak_rss_mb, rss_mb
from edge_embed.search import hamming_topk


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--texts", type=int, default=50_000)
    p.add_argument("--docs", type=int, default=1_000_000)
    p.add_argument("--threads", type=int)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    model = Embedder(args.bundle, precision="int8", providers="cpu", threads=args.threads)
    model.embed(["warm up the arena with one short text", "and another"] * 8)
    loaded = rss_mb()
    texts = (f"note {i}: the meeting about item {i % 977} moved to room {i % 31}" for i in range(args.texts))
    start, rows = time.perf_counter(), 0
    for block in model.embed_stream(texts, task="search_document"):
        rows += len(block)
    stream_s = time.perf_counter() - start
    peak = peak_rss_mb()
    rng = np.random.default_rng(0)
    docs = rng.integers(0, 256, (args.docs, 96), dtype=np.uint8)
    query = rng.integers(0, 256, 96, dtype=np.uint8)
    hamming_topk(query, docs[:1000], 10)
    start = time.perf_counter()
    hamming_topk(query, docs, 10)
    search_s = time.perf_counter() - start
    result = {"bundle": str(args.bundle), "texts": rows, "stream_s": round(stream_s, 2),
              "rss_loaded_mb": round(loaded, 1), "rss_peak_mb": round(peak, 1),
              "peak_minus_loaded_mb": round(peak - loaded, 1), "docs": args.docs,
              "top10_hamming_s": round(search_s, 4)}
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
