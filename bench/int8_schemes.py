"""Bundles side by side in one process: tokens/s (alternating rounds) and batch dependence.

    python bench/int8_schemes.py dynamic=build/bench/bundles/v15:int8 \
        blockwise=/tmp/v15-blockwise:int8 fp32=build/bench/bundles/v15:fp32 [--threads 2] [--rounds 5]

Each NAME=BUNDLE:PRECISION is one Embedder (CPU). For the benchmark's 32-, 128- and 512-token
workloads (edge_embed/bench_texts.py) it prints the median tokens/s of each, precisions alternating
within every round; then, on the 128-token texts, how far each text's vector embedded alone is from
the same text embedded with the others (1 - cosine, mean and max). Made for comparing the int8
schemes of `python -m export --int8-scheme dynamic|blockwise` (README, "int8").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tokenizers import Tokenizer  # noqa: E402

from edge_embed import Embedder  # noqa: E402
from edge_embed.bench_texts import WORKLOADS, TextMaker  # noqa: E402
from edge_embed.benchmark import throughput  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("systems", nargs="+", help="NAME=BUNDLE:PRECISION")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    models = {}
    for spec in args.systems:
        name, _, target = spec.partition("=")
        bundle, _, precision = target.rpartition(":")
        models[name] = Embedder(bundle, precision=precision, providers="cpu", threads=args.threads)
    first = next(iter(models.values()))
    tokenizer = Tokenizer.from_file(str(first.bundle / "tokenizer.json"))
    for workload in [w for w in WORKLOADS if not w.long]:
        texts = TextMaker.seeded(tokenizer, workload.name).texts(
            workload, workload.texts, first.max_length)
        tokens = sum(len(seq) for seq in first.tokenizer.encode(texts).sequences)
        result = throughput(models, texts, tokens, args.rounds)
        print(f"{workload.name:<10} tokens/s " + "  ".join(f"{n} {r['tokens_per_s']:,.0f}" for n, r in result.items()))
        if workload.name == "para-128":
            para = texts
    for name, model in models.items():
        batched = model.embed(para)
        alone = np.concatenate([model.embed([text]) for text in para])
        gap = 1 - (batched * alone).sum(axis=1)
        print(f"{name:<10} alone vs batched, 1 - cosine: mean {gap.mean():.1e}, max {gap.max():.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
