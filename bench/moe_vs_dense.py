"""v2-moe against v1.5 per FLOP, in the same rounds: is the sparse MoE as efficient as the dense model?

    python bench/moe_vs_dense.py [--work build/bench] [--rounds 9] [--out FILE.json]

The issue's target: v2-moe int8 within 10% of v1.5's FLOP-proportional speed (both spend about
227 MFLOP per token in matmuls). bench/run.py measures the two models in separate runs, minutes
apart, and this shared machine's speed drifts by more than 10% between them. Here one int8
Embedder per model (CPU, 2 threads) embeds the benchmark's texts for that model (same seeds as
bench/run.py), the two alternating within every round. Per round, the ratio of the two models'
GFLOP/s (matmul and attention FLOPs of the texts actually embedded, bench/roofline.py); reported:
the median of those per-round ratios (target >= 0.90) and each model's median GFLOP/s.
Run bench/run.py for both models first: it writes the full-size bundles this script uses.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import checkpoints  # noqa: E402
import roofline  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from edge_embed import Embedder  # noqa: E402
from edge_embed.bench_texts import WORKLOADS, TextMaker  # noqa: E402
from edge_embed.measure import alternating_rounds  # noqa: E402

MODELS = ("v15", "v2moe")
TARGET = 0.90


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="build/bench")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="")
    args = p.parse_args(argv)

    bundles = {key: Path(args.work) / "bundles" / key for key in MODELS}
    missing = [str(b) for b in bundles.values() if not (b / "edge_embed.json").exists()]
    if missing:
        sys.exit(f"no bundle at {', '.join(missing)}: run `python bench/run.py --work {args.work} --model all` first")
    models = {key: Embedder(b, precision="int8", providers="cpu", threads=args.threads) for key, b in bundles.items()}
    tokenizers = {key: Tokenizer.from_file(str(b / "tokenizer.json")) for key, b in bundles.items()}
    flops = {key: roofline.model_flops(checkpoints.full_config(checkpoints.MODELS[key])) for key in MODELS}

    results = {"threads": args.threads, "rounds": args.rounds, "target": TARGET,
               "workloads": {}}
    print("| workload | v1.5 GFLOP/s | v2-moe GFLOP/s | v2-moe / v1.5 per FLOP (median of rounds) | rounds |")
    print("|---|---:|---:|---:|---|")
    for workload in [w for w in WORKLOADS if not w.long]:
        texts, work = {}, {}
        for key in MODELS:
            maker = TextMaker.seeded(tokenizers[key], key, workload.name)
            texts[key] = maker.texts(workload, workload.texts, models[key].max_length)
            work[key] = sum(roofline.text_flops(flops[key], [maker.count(t) for t in texts[key]]))
            models[key].embed(texts[key][:4])  # warm-up
        seconds = alternating_rounds({key: partial(models[key].embed, texts[key]) for key in MODELS}, args.rounds)
        rates = {key: [work[key] / s / 1e9 for s in seconds[key]] for key in MODELS}
        per_round = [moe / dense for moe, dense in zip(rates["v2moe"], rates["v15"])]
        ratio = statistics.median(per_round)
        results["workloads"][workload.name] = {"gflops": rates, "ratio_per_round": per_round, "ratio": ratio}
        print(f"| {workload.name} | {statistics.median(rates['v15']):,.0f} | {statistics.median(rates['v2moe']):,.0f} "
              f"| {ratio:.2f} ({'met' if ratio >= TARGET else 'not met'}) "
              f"| {', '.join(f'{x:.2f}' for x in per_round)} |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
