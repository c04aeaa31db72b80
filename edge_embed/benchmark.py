"""`edge-embed bench BUNDLE`: how fast a bundle runs on this machine, as a user's program runs it.

For one bundle, one or more precisions and a stated thread count, it measures:

- tokens/s and texts/s through `Embedder.embed` (tokenization, batching, the model, pooling) on
  English prose cut to about 32, 128 and 512 tokens, and to 2048 when the model takes documents
  that long. Precisions alternate within every round; the median and fastest rounds are reported;
- load time to first embedding and RSS after load, in fresh Python processes (imports included;
  the median of 3);
- in the last of them, one text as long as the model takes (8192 tokens for v1.5): its time and
  the process's peak RSS (not in --quick runs);
- the size of each precision's model files.

The peers, the roofline and full-size generated checkpoints are `make bench` (bench/run.py).
"""
from __future__ import annotations

import gc
import os
import platform
import statistics
from pathlib import Path

from edge_embed import measure
from edge_embed.bench_texts import WORKLOADS, TextMaker, Workload
from edge_embed.errors import EdgeEmbedError, InputError, is_int

SETTLE_S = 0.2  # idle gap before each timed call, so one session's spinning threads have stopped
COLD_REPEATS = 3  # fresh processes per precision; the median load time is reported
LONG_MIN_TOKENS = 2048  # shorter-context models (v2-moe: 512) get no full-length text
ISA_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8",  # x86
             "asimddp", "i8mm", "sve")  # ARM: int8 dot products, int8 matrix multiply


def cpu_info() -> dict:
    """The CPU's name, logical core count and the instruction sets int8 kernels care about."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model") and name in ("", "x86_64", "aarch64", platform.machine()):
                name = value.strip()
            if key in ("flags", "Features"):
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu": name, "logical_cores": os.cpu_count(), "isa": [f for f in ISA_FLAGS if f in flags]}


def parse_precisions(value: str) -> list[str]:
    names = [p.strip() for p in value.split(",") if p.strip()]
    if not names or len(set(names)) != len(names):
        raise InputError(f"--precision takes one or more distinct names separated by commas, not {value!r}")
    return names


def workloads_for(max_length: int, names: list[str] | None) -> list[Workload]:
    """The throughput workloads whose texts fit the model (the 8192-token one is the cold process's)."""
    usable = [w for w in WORKLOADS if not w.fresh_process and w.target <= max_length]
    if not names:
        return usable
    known = {w.name: w for w in usable}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"unknown workload(s) {unknown} for this model; choose from {sorted(known)}")
    return [known[n] for n in names]


def throughput(models: dict, texts: list[str], tokens: int, rounds: int) -> dict:
    """Alternating rounds of model.embed(texts) per name (order rotated each round)."""
    names = list(models)
    for model in models.values():  # warm-up: a provider sets up buffers (GPUs: kernels) per new shape
        model.embed(texts)
    calls = {name: (lambda model=models[name]: model.embed(texts)) for name in names}
    seconds = measure.alternating_rounds(calls, rounds, settle_s=SETTLE_S)
    out = {}
    for name, times in seconds.items():
        median, best = statistics.median(times), min(times)
        out[name] = {"tokens_per_s": tokens / median, "texts_per_s": len(texts) / median,
                     "tokens_per_s_best": tokens / best, "seconds": times}
    return out


def cold_start(bundle: Path, precision: str, providers: str, threads: int | None,
               first_text: str, long_text: str | None) -> dict:
    """A fresh process that loads the bundle as a user's program does (measure.cold_start)."""
    kwargs = {"bundle": str(bundle), "precision": precision, "providers": providers, "threads": threads}
    try:
        return measure.cold_start("edge_embed:Embedder", kwargs, first_text, long_text)
    except measure.ColdStartError as exc:
        raise EdgeEmbedError(f"the fresh process for {precision} failed ({exc})") from None


def file_sizes(bundle: Path, manifest) -> dict[str, int]:
    return {precision: sum((bundle / name).stat().st_size for name in files)
            for precision, files in manifest.models.items()}


def run_benchmark(bundle: str | Path, precisions: list[str], providers: str = "cpu", threads: int | None = None,
                  workloads: list[str] | None = None, rounds: int | None = None, quick: bool = False,
                  long: bool = True, log=None) -> dict:
    """Measure a bundle; returns a JSON-ready dict (see format_report for what it holds)."""
    import onnxruntime
    from tokenizers import Tokenizer

    from edge_embed import Embedder
    from edge_embed.manifest import TOKENIZER_FILE

    log = log or (lambda message: None)
    if rounds is not None and not (is_int(rounds) and rounds >= 1):  # threads: Embedder checks them
        raise InputError(f"rounds must be a positive int, not {rounds!r}")
    bundle = Path(bundle)
    models = {}
    for precision in precisions:
        model = Embedder(bundle, precision=precision, providers=providers, threads=threads)
        models[model.precision] = model  # "auto" -> what it resolved to
    first = next(iter(models.values()))
    manifest = first.manifest
    chosen = workloads_for(first.max_length, workloads)
    maker_tokenizer = Tokenizer.from_file(str(bundle / TOKENIZER_FILE))
    result = {
        "bundle": str(bundle.resolve()), "family": manifest.family, "max_length": first.max_length,
        "precisions": list(models), "provider": first.providers[0], "threads": threads,
        "machine": cpu_info(), "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
        "file_sizes": file_sizes(bundle, manifest), "workloads": {}, "cold_start": {},
    }
    for workload in chosen:
        if not workload.count(quick):  # quick mode leaves the 2048-token documents to the cold process
            continue
        maker = TextMaker.seeded(maker_tokenizer, workload.name)
        texts = maker.texts(workload, workload.count(quick), first.max_length)
        tokens = sum(len(seq) for seq in first.tokenizer.encode(texts).sequences)
        n_rounds = rounds or workload.n_rounds(quick)
        log(f"{workload.name}: {len(texts)} texts, {tokens} tokens, {n_rounds} rounds")
        result["workloads"][workload.name] = {
            "texts": len(texts), "tokens": tokens, "rounds": n_rounds,
            "systems": throughput(models, texts, tokens, n_rounds),
        }
    del models, first
    gc.collect()

    maker = TextMaker.seeded(maker_tokenizer, "cold-start")
    short = next(w for w in WORKLOADS if w.name == "short-32")
    first_text = maker.text(short.target, manifest.max_length)
    long_text = None
    if long and not quick and manifest.max_length >= LONG_MIN_TOKENS:
        long_text = maker.text(min(max(w.target for w in WORKLOADS), manifest.max_length), manifest.max_length)
        result["long_text_tokens"] = len(maker_tokenizer.encode(long_text).ids)
    repeats = 1 if quick else COLD_REPEATS
    for precision in result["precisions"]:
        then = f", the last one then embeds one {result['long_text_tokens']}-token text" if long_text else ""
        log(f"{repeats} fresh process(es): {precision}{then}")
        runs = [cold_start(bundle, precision, providers, threads, first_text, long_text if i == repeats - 1 else None)
                for i in range(repeats)]
        summary = {key: statistics.median(run[key] for run in runs)
                   for key in ("load_to_first_embedding_s", "rss_after_load_mb") if runs[0][key] is not None}
        summary.update({key: runs[-1][key] for key in ("long_text_s", "peak_rss_mb") if key in runs[-1]})
        result["cold_start"][precision] = {**summary, "runs": runs}
    return result


def format_report(result: dict) -> str:
    """The result as the plain-text tables `edge-embed bench` prints."""
    machine = result["machine"]
    threads = result["threads"] or "onnxruntime's default (one per physical core)"
    lines = [
        f"bundle     {result['bundle']} ({result['family']})",
        f"machine    {machine['cpu']}, {machine['logical_cores']} logical cores, "
        f"{' '.join(machine['isa']) or 'no listed int8 ISA extensions'}",
        f"runtime    onnxruntime {result['onnxruntime']}, {result['provider']}, threads: {threads}",
        "",
        f"{'workload':<12}{'texts':>6}{'tok/text':>9}" + "".join(
            f"{p + ' tok/s':>14}{p + ' texts/s':>15}" for p in result["precisions"]),
    ]
    for name, w in result["workloads"].items():
        cells = "".join(f"{w['systems'][p]['tokens_per_s']:>14,.0f}{w['systems'][p]['texts_per_s']:>15,.1f}"
                        for p in result["precisions"])
        lines.append(f"{name:<12}{w['texts']:>6}{w['tokens'] / w['texts']:>9.0f}{cells}")
    if result["workloads"]:
        rounds = sorted({w["rounds"] for w in result["workloads"].values()})
        lines.append(f"(median of {'/'.join(map(str, rounds))} rounds; precisions alternate within each round)")
    lines.append("")
    for precision, cold in result["cold_start"].items():
        size = result["file_sizes"][precision] / 1e6
        line = f"{precision:<6} files {size:,.1f} MB, load to first embedding {cold['load_to_first_embedding_s']:.2f} s"
        if cold.get("rss_after_load_mb") is not None:
            line += f", RSS after load {cold['rss_after_load_mb']:,.0f} MB"
        if "long_text_s" in cold:
            line += f"; one {result['long_text_tokens']}-token text {cold['long_text_s']:.1f} s"
        if cold.get("peak_rss_mb") is not None:
            line += f", peak RSS {cold['peak_rss_mb']:,.0f} MB"
        lines.append(line)
    return "\n".join(lines)
