"""Batch planning on the real workloads: the runtime's plan vs one big length-sorted batch.

    python bench/batching.py [--bundle build/bench/bundles/v15] [--rounds 7] [--out FILE.json]

One Embedder (int8, CPU, 2 threads) embeds the benchmark's texts (edge_embed/bench_texts.py, same seeds
as bench/run.py) with two BatchLimits, alternating within every round: the runtime's defaults
(length-sorted runs cut where padding costs more than another batch, at most 2,048 padded tokens)
and the old plan (everything in as few batches as an 8,192-token budget allows). Reported per
workload: padded tokens / real tokens, the median tokens/s of each plan, and the speed-up as the
median of the per-round ratios (each round's two plans run back to back, so the ratio is less
exposed than either median to this shared machine's speed drifting between rounds).
Run bench/run.py first: it writes the full-size bundle this script uses.
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

from tokenizers import Tokenizer  # noqa: E402

from edge_embed import Embedder  # noqa: E402
from edge_embed.batching import BatchLimits, plan_batches  # noqa: E402
from edge_embed.bench_texts import WORKLOADS, TextMaker  # noqa: E402
from edge_embed.measure import alternating_rounds  # noqa: E402

PLANS = {
    "planned": BatchLimits.for_provider("CPUExecutionProvider"),  # what the Embedder uses on CPU
    "one-big-batch": BatchLimits(max_tokens=8192, batch_cost=10**9),
}


def padding(lengths: list[int], limits: BatchLimits) -> float:
    batches = list(plan_batches(lengths, limits))
    return sum(len(b) * max(lengths[i] for i in b) for b in batches) / sum(lengths)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default="build/bench/bundles/v15")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="")
    args = p.parse_args(argv)

    bundle = Path(args.bundle)
    model = Embedder(bundle, precision="int8", providers="cpu", threads=args.threads)
    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    results = {"bundle": str(bundle), "threads": args.threads, "workloads": {}}
    print("| workload | padded / real tokens, planned | one big batch | tokens/s planned | one big batch "
          "| speed-up (paired) |")
    print("|---|---:|---:|---:|---:|---:|")
    for workload in [w for w in WORKLOADS if not w.long]:
        key = bundle.name  # bench/run.py's model key (bundles/v15, bundles/v2moe): the same texts
        maker = TextMaker.seeded(tokenizer, key, workload.name)
        texts = maker.texts(workload, workload.texts, model.max_length)
        lengths = [maker.count(t) for t in texts]
        model.embed(texts[:4])  # warm-up
        def with_plan(limits, texts=texts):
            model.batch_limits = limits
            model.embed(texts)

        times = alternating_rounds({name: partial(with_plan, limits) for name, limits in PLANS.items()}, args.rounds)
        tok_s = {name: sum(lengths) / statistics.median(t) for name, t in times.items()}
        speedup = statistics.median(old / new for new, old in zip(times["planned"], times["one-big-batch"]))
        pads = {name: padding(lengths, limits) for name, limits in PLANS.items()}
        results["workloads"][workload.name] = {"tokens": sum(lengths), "padded_over_real": pads,
                                               "tok_s": tok_s, "speedup": speedup, "times_s": times}
        print(f"| {workload.name} | {pads['planned']:.3f} | {pads['one-big-batch']:.3f} "
              f"| {tok_s['planned']:,.0f} | {tok_s['one-big-batch']:,.0f} "
              f"| {speedup:.2f}x |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
