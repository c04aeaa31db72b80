"""Soak: many embed calls of random shapes in one process, RSS sampled throughout.

    python bench/soak.py [--bundle build/bench/bundles/v15] [--calls 10000] [--out FILE.json] [--quick]

One Embedder (the full-size v1.5 int8 bundle, CPU, max length 512) serves CALLS embed calls. Each call draws a
batch size from 1 to 64 and, per text, a length from 1 to 512 tokens, both log-uniform (most
calls small, as services see them, with a tail of full batches); 5% of the texts are exactly
the max length, and 5% of the calls send texts of 1.2-3x the max length with truncation="chunk".
Task, dim and binary vary too. The process's RSS is read from /proc every --sample-every calls.
Passes when the RSS after the last call is within 5% of the RSS after the first 100 calls.
The bundle is exported from the random full-size checkpoint of bench/checkpoints.py when missing
(speed and memory do not depend on the weights' values). --quick: 150 calls of at most 8 texts, to
show it works. The full run embeds about 20 million tokens: hours on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from tokenizers import Tokenizer  # noqa: E402

from edge_embed import Embedder  # noqa: E402
from edge_embed.bench_texts import TextMaker  # noqa: E402
from edge_embed.measure import peak_rss_mb, rss_mb  # noqa: E402

BASELINE_CALLS = 100
TOLERANCE = 0.05
TASKS = [None, "search_query", "search_document", "clustering", "classification"]


def rss_bytes() -> int:
    """Resident set size now (Linux /proc; elsewhere the peak, which can only grow)."""
    return int((rss_mb() or peak_rss_mb()) * 2**20)


def log_uniform(rng: np.random.Generator, low: int, high: int) -> int:
    return int(min(high, math.floor(math.exp(rng.uniform(math.log(low), math.log(high + 1))))))


class TextPool:
    """Texts cut to an exact token count from long runs of real prose (edge_embed.bench_texts)."""

    def __init__(self, tokenizer: Tokenizer, max_length: int, seed: int, runs: int = 48):
        maker = TextMaker(tokenizer, seed=seed)
        self.tokenizer, self.max_length = tokenizer, max_length
        self.runs = [maker.text(3 * max_length, 3 * max_length) for _ in range(runs)]
        self.offsets = [tokenizer.encode(run, add_special_tokens=False).offsets for run in self.runs]
        self.specials = maker.specials

    def text(self, rng: np.random.Generator, tokens: int) -> str:
        """A text of `tokens` tokens, special tokens included (at least one content token)."""
        i = int(rng.integers(len(self.runs)))
        content = max(1, min(tokens - self.specials, len(self.offsets[i])))
        return self.runs[i][: self.offsets[i][content - 1][1]]


def plan_call(rng: np.random.Generator, pool: TextPool, low_dim: int, high_dim: int, max_batch: int) -> dict:
    size = log_uniform(rng, 1, max_batch)
    chunked = rng.random() < 0.05
    texts = []
    for _ in range(size):
        if chunked:
            tokens = int(rng.uniform(1.2, 3.0) * pool.max_length)
        elif rng.random() < 0.05:
            tokens = pool.max_length
        else:
            tokens = log_uniform(rng, 1, pool.max_length)
        texts.append(pool.text(rng, tokens))
    binary = bool(rng.random() < 0.2)
    dims = [d for d in (64, 128, 256, 512, high_dim) if low_dim <= d <= high_dim and (not binary or d % 8 == 0)]
    return {"texts": texts, "task": TASKS[int(rng.integers(len(TASKS)))], "dim": int(rng.choice(dims)),
            "binary": binary, "truncation": "chunk" if chunked else "truncate"}


def ensure_bundle(work: Path) -> Path:
    import checkpoints

    spec = checkpoints.MODELS["v15"]
    ckpt = checkpoints.write_checkpoint(spec, work / "checkpoints" / "v15")
    return Path(checkpoints.ensure_bundle(spec, ckpt, work / "bundles" / "v15", None, reuse=True)["path"])


def soak(model: Embedder, calls: int, sample_every: int, seed: int, max_batch: int = 64, log=print,
         partial: Path | None = None) -> dict:
    rng = np.random.default_rng(seed)
    tokenizer = Tokenizer.from_file(str(model.bundle / "tokenizer.json"))
    pool = TextPool(tokenizer, model.max_length, seed)
    samples, tokens, baseline = [], 0, None
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TruncationWarning for the texts over the max length
        for call in range(1, calls + 1):
            job = plan_call(rng, pool, *model.dims, max_batch)
            vectors = model.embed(**job)
            assert vectors.shape[0] == len(job["texts"]) and (job["binary"] or np.isfinite(vectors).all())
            tokens += sum(len(e.ids) for e in tokenizer.encode_batch(job["texts"]))
            if call == BASELINE_CALLS:
                baseline = rss_bytes()
            if call % sample_every == 0 or call in (1, 10, BASELINE_CALLS, calls):
                elapsed = time.perf_counter() - start
                samples.append({"call": call, "seconds": round(elapsed, 2), "rss_mb": round(rss_bytes() / 2**20, 1)})
                log(f"[soak] {call}/{calls} calls, {elapsed:.0f} s, {call / elapsed:.2f} calls/s, "
                    f"RSS {samples[-1]['rss_mb']} MB", flush=True)
                if partial:  # a run stopped early still leaves its samples
                    partial.write_text(json.dumps({"tokens": tokens, "samples": samples}) + "\n", encoding="utf-8")
    elapsed = time.perf_counter() - start
    final = rss_bytes()
    result = {"calls": calls, "seconds": elapsed, "calls_per_s": calls / elapsed, "tokens": tokens,
              "tokens_per_s": tokens / elapsed, "rss_mb_after_100": baseline and baseline / 2**20,
              "rss_mb_final": final / 2**20, "rss_mb_max_sampled": max(s["rss_mb"] for s in samples),
              "samples": samples}
    if baseline:
        result["final_over_after_100"] = final / baseline
        result["within_5_percent"] = final <= baseline * (1 + TOLERANCE)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, help="v15 bundle (default: WORK/bundles/v15, exported when missing)")
    p.add_argument("--work", type=Path, default=Path("build/bench"))
    p.add_argument("--calls", type=int, default=10_000)
    p.add_argument("--sample-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=16)
    p.add_argument("--precision", default="int8")
    p.add_argument("--max-batch", type=int, default=64, help="largest batch (texts per call)")
    p.add_argument("--max-length", type=int, default=512,
                   help="the Embedder's max length (default 512, the model allows 8192): texts reach it, and "
                   "the chunked calls go past it")
    p.add_argument("--quick", action="store_true",
                   help="150 calls of at most 8 texts, sampled every 25: shows the script works")
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.calls, args.sample_every, args.max_batch = 150, 25, 8
    if args.bundle is None and not (args.work / "bundles" / "v15" / "edge_embed.json").exists():
        ensure_bundle(args.work)  # the export's memory would stay in this process's RSS: start afresh
        os.execv(sys.executable, [sys.executable, *sys.argv])
    bundle = args.bundle or ensure_bundle(args.work)
    before = rss_bytes()
    model = Embedder(bundle, precision=args.precision, providers="cpu", threads=args.threads,
                     max_length=args.max_length)
    print(f"[soak] {model!r}, {args.calls} calls, RSS after loading {rss_bytes() / 2**20:.0f} MB "
          f"(before {before / 2**20:.0f} MB)", flush=True)
    partial = args.out.with_suffix(".partial.json") if args.out else None
    if partial:
        partial.parent.mkdir(parents=True, exist_ok=True)
    result = soak(model, args.calls, args.sample_every, args.seed, args.max_batch, partial=partial)
    import onnxruntime

    result["setup"] = {"bundle": str(bundle), "precision": model.precision, "threads": args.threads,
                       "max_batch": args.max_batch,
                       "seed": args.seed, "max_length": model.max_length, "python": platform.python_version(),
                       "onnxruntime": onnxruntime.__version__, "machine": platform.machine(),
                       "cpu": _cpu_name(), "command": " ".join(sys.argv)}
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if result.get("within_5_percent", True) else 1


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
