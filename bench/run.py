"""edge-embed benchmark: throughput, load time, memory, file sizes and the roofline, side by side.

    python bench/run.py --work build/bench [--quick] [--model v15|v2moe|all] [--threads 2]

Generates full-size random checkpoints of nomic-embed-text-v1.5 and v2-moe (bench/checkpoints.py),
exports them with export_bundle (cached under --work), converts them to GGUF F16 and Q8_0 for
llama.cpp, and measures, with the same thread count for every system:

- tokens/s and texts/s for edge-embed int8 and fp32, the torch model in export/ and llama.cpp
  (llama-cpp-python in its own pinned venv, --work/venvs/llama; skipped with the reason recorded when
  it cannot be installed), on texts of
  about 32, 128 and 512 tokens and, for v1.5, documents of 2048 and 8192 tokens. Systems
  alternate within each round (order rotated every round); the median round counts;
- load time to first embedding and RSS in fresh processes; peak RSS for one 8192-token text;
- file sizes; GEMM GFLOP/s (fp32, int8) and each result as a fraction of that roofline.

Writes --work/results.json, --work/results.md, --work/bench.png (with --tag T: results-T.json, ...)
and prints the tables.
`--quick` is a smoke test (fewer texts and rounds, no 8192-token throughput run): a few minutes
once the bundles are cached (the first export of the two models takes several more).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import statistics
import sys
import time
from functools import partial
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for path in (str(REPO), str(BENCH)):
    if path not in sys.path:
        sys.path.insert(0, path)

import checkpoints  # noqa: E402
import deps  # noqa: E402
import report  # noqa: E402
import roofline  # noqa: E402
import systems as systems_mod  # noqa: E402
from cpuload import WAIT_BUDGET, CpuMeter, wait_quiet  # noqa: E402

from edge_embed import measure  # noqa: E402
from edge_embed.bench_texts import WORKLOADS, TextMaker  # noqa: E402
from edge_embed.benchmark import cpu_info  # noqa: E402

ALL_SYSTEMS = ["edge-int8", "edge-fp32", "torch-fp32", "llama-Q8_0", "llama-F16"]
SETTLE_S = 0.2  # idle gap before each timed call: the previous system's threads stop spinning
DIRTY = 0.10  # a round where other processes took more than this share of the CPU is repeated


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine_info(llama_version: str | None) -> dict:
    cpu = cpu_info()
    flags = ", ".join(f.upper() for f in cpu["isa"]) or "?"
    if not {"avx512_vnni", "avx_vnni"} & set(cpu["isa"]):
        flags += "; no VNNI"
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    import numpy
    import onnxruntime
    import torch

    return {"cpu": cpu["cpu"], "cores": cpu["logical_cores"], "isa": flags, "ram_gb": ram,
            "python": platform.python_version(), "numpy": numpy.__version__,
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "llama_cpp": llama_version}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="build/bench", help="cache and output folder (default build/bench)")
    p.add_argument("--quick", action="store_true", help="smoke test: fewer texts and rounds")
    p.add_argument("--tag", default="", help="name the outputs results-TAG.json/.md, bench-TAG.png")
    p.add_argument("--model", choices=["v15", "v2moe", "all"], default="all")
    p.add_argument("--threads", type=int, default=2, help="threads for every system (default 2)")
    p.add_argument("--systems", default=",".join(ALL_SYSTEMS),
                   help=f"comma-separated subset of {','.join(ALL_SYSTEMS)}")
    p.add_argument("--workloads", default="", help="comma-separated subset of workload names")
    p.add_argument("--rounds", type=int, help="override the rounds of every workload")
    p.add_argument("--no-llama", action="store_true", help="do not try llama.cpp")
    p.add_argument("--llama-timeout", type=float, default=1800,
                   help="seconds allowed for installing llama-cpp-python into its venv (default 1800)")
    p.add_argument("--llama-flash-attn", action="store_true", help="run llama.cpp with flash attention")
    p.add_argument("--moe", choices=["sparse", "dense", "fused"], help="export option for v2-moe (default: "
                   "export's own default)")
    p.add_argument("--reexport", action="store_true", help="export the bundles again even if cached")
    p.add_argument("--reuse-bundles", action="store_true",
                   help="use cached bundles even if export/ or edge_embed/ changed since they were made")
    p.add_argument("--load-repeats", type=int, help="fresh processes per system for load time (default 1 "
                   "quick, 3 full)")
    p.add_argument("--no-long-rss", action="store_true", help="skip the 8192-token peak-RSS processes")
    p.add_argument("--quiet-wait", type=float,
                   help="before each round, wait up to this many seconds for other processes to go "
                   "idle, and repeat rounds they disturbed (default 30 full, 0 quick)")
    p.add_argument("--quiet-budget", type=float, default=300,
                   help="total seconds the run may spend waiting for quiet (default 300)")
    return p.parse_args(argv)


def seeded_texts(spec, tokenizer, workload, n, limit):
    return TextMaker.seeded(tokenizer, spec.key, workload.name).texts(workload, n, limit)


def build_systems(specs: dict) -> tuple[dict, dict]:
    built, failed = {}, {}
    for name, spec in specs.items():
        start = time.perf_counter()
        try:
            built[name] = systems_mod.build(spec)
            log(f"[bench]   {name} loaded ({time.perf_counter() - start:.1f} s)")
        except Exception as exc:  # a peer that cannot load is reported, not fatal
            failed[name] = f"{type(exc).__name__}: {exc}"
            log(f"[bench]   {name} FAILED to load: {failed[name]}")
    return built, failed


def agreement(built: dict, texts: list[str]) -> dict:
    import numpy as np

    if "edge-fp32" not in built:
        return {}
    ref = built["edge-fp32"].pooled(texts)
    out = {}
    for name, system in built.items():
        if name == "edge-fp32":
            continue
        try:
            got = system.pooled(texts)
            out[name] = float(np.mean(np.sum(ref * got, axis=1)))
        except Exception as exc:
            log(f"[bench]   agreement check failed for {name}: {exc}")
    return out


def measure_workload(built, workload, texts, lengths, rounds, quiet_wait: float) -> dict:
    """Alternating rounds over the systems (edge_embed.measure): per system the wall time of
    embed(texts) and the share of the CPU that other processes took during the call. A round in
    which others took more than DIRTY of the CPU during any call is repeated (after waiting for
    quiet), up to half as many extra rounds as planned; medians use the clean rounds when at least
    half are clean."""
    names, errors = list(built), {}
    others, clean_rounds = {name: [] for name in names}, []
    helpers = tuple(system.proc.pid for system in built.values() if hasattr(system, "proc"))  # remote peers
    for name in names:  # per-workload setup and a warm-up call, outside the timed region
        try:
            built[name].prepare(texts)
            built[name].embed(texts[: min(len(texts), 4)] if not workload.long else [texts[0][:2000]])
        except Exception as exc:  # a peer that fails (or crashes its own process) is reported, not fatal
            errors[name] = f"{type(exc).__name__}: {exc}"
            log(f"[bench]     {name} failed: {errors[name]}")
    most = rounds + (rounds + 1) // 2 if quiet_wait > 0 else rounds  # extra rounds replace disturbed ones

    def call(name: str) -> None:
        if name in errors:
            return
        meter = CpuMeter(helpers)
        try:
            built[name].embed(texts)
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            log(f"[bench]     {name} failed: {errors[name]}")
            return
        others[name].append(meter.others())

    def until(r: int, seconds: dict) -> bool:
        busy = max((others[n][-1] for n in names if n not in errors and others[n]), default=0.0)
        if busy <= DIRTY:
            clean_rounds.append(r)
        done = ", ".join(f"{n} {sum(lengths) / seconds[n]:.0f}" for n in names if n not in errors)
        log(f"[bench]     round {r + 1}: tok/s {done}"
            + (f" (DISCOUNTED: other processes took up to {100 * busy:.0f}% CPU)" if busy > DIRTY else ""))
        if len(clean_rounds) >= rounds or r + 1 >= most:
            return True
        if quiet_wait > 0 and wait_quiet(quiet_wait, log=log) > DIRTY / 2 and r + 1 >= rounds:
            log("[bench]     still busy: no more extra rounds")
            return True
        return False

    if quiet_wait > 0:
        wait_quiet(quiet_wait, log=log)
    times = measure.alternating_rounds({n: partial(call, n) for n in names}, most, SETTLE_S, until)
    r = len(times[names[0]])
    use = clean_rounds if len(clean_rounds) >= (rounds + 1) // 2 else list(range(r))
    tokens = int(sum(lengths))
    out = {"texts": len(texts), "tokens": tokens, "mean_tokens": tokens / len(texts),
           "min_tokens": int(min(lengths)), "max_tokens": int(max(lengths)), "rounds": len(use),
           "rounds_run": r, "rounds_clean": len(clean_rounds), "contended": use != clean_rounds,
           "lengths": [int(n) for n in lengths], "systems": {}}
    for name in names:
        if name in errors:
            out["systems"][name] = {"error": errors[name]}
            continue
        kept = [times[name][i] for i in use]
        median = statistics.median(kept)
        entry = {"times_s": times[name], "used_rounds": use, "median_s": median, "best_s": min(kept),
                 "tok_s": tokens / median,
                 "texts_s": len(texts) / median, "others_cpu": others[name],
                 "others_cpu_max": max(others[name][i] for i in use)}
        if hasattr(built[name], "token_counts"):
            entry["own_tokens"] = int(sum(built[name].token_counts(texts)))
        out["systems"][name] = entry
    return out


def apply_roofline(model: dict, rates: dict) -> None:
    """GFLOP/s, the roofline bound and each system's fraction of it (after all GEMM measurements)."""
    flops = model["flops"]
    mix = roofline.model_bound(flops, rates)
    model["gemm_bound"] = mix
    for wl in model["workloads"].values():
        lengths = wl["lengths"]
        linear, attention = roofline.text_flops(flops, lengths)
        wl["flops"] = {"linear": linear, "attention": attention}
        wl["bound_tok_s"] = {kind: wl["tokens"] / roofline.bound_seconds(flops, mix, kind, lengths)
                             for kind in ("int8", "fp32")}
        for name, entry in wl["systems"].items():
            if "median_s" not in entry:
                continue
            compute = systems_mod.COMPUTE[name]
            entry["bound"] = compute
            entry["gflops"] = (linear + attention) / entry["median_s"] / 1e9
            bound = roofline.bound_seconds(flops, mix, compute, lengths)
            entry["bound_fraction"] = bound / entry["median_s"]
            # The bound is the machine's fastest GEMM calls; the model's fastest round is the like
            # for like (a shared host's speed drifts by 20-30% within minutes).
            entry["bound_fraction_best"] = bound / entry["best_s"] if "best_s" in entry else None


def cold_start(spec: dict, first_text: str, long_text: str | None = None) -> dict:
    """One fresh process (edge_embed.measure.cold_start): edge-embed as a user's program loads it, a
    peer through systems.build, in its own venv's Python where it has one; {"error"} if it fails."""
    factory, kwargs = "systems:build", {"spec": {k: v for k, v in spec.items() if k != "python"}}
    if spec["system"].startswith("edge-"):
        factory, kwargs = "edge_embed:Embedder", {"bundle": spec["bundle"], "precision": spec["system"][5:],
                                                  "providers": "cpu", "threads": spec["threads"]}
    try:
        return measure.cold_start(factory, kwargs, first_text, long_text, spec.get("python") or sys.executable,
                                  (str(BENCH),), timeout=900)
    except measure.ColdStartError as exc:
        return {"error": str(exc)}


def run_model(spec, args, llama) -> dict:
    from tokenizers import Tokenizer

    from edge_embed.manifest import read_manifest

    work = Path(args.work)
    quick = args.quick
    ckpt = checkpoints.write_checkpoint(spec, work / "checkpoints" / spec.key, log=log)
    moe = args.moe if spec.key == "v2moe" else None  # the MoE graph form means nothing to v1.5
    bundle_info = checkpoints.ensure_bundle(spec, ckpt, work / "bundles" / spec.key, moe,
                                            force=args.reexport, reuse=args.reuse_bundles, log=log)
    bundle = Path(bundle_info["path"])
    manifest = read_manifest(bundle)
    config = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    model = {"title": spec.title, "bundle": bundle_info, "sizes": checkpoints.file_sizes(bundle),
             "flops": roofline.model_flops(config), "workloads": {}, "threads": args.threads}

    wanted = [s for s in args.systems.split(",") if s]
    ggufs = {}
    if llama["available"]:
        import gguf_convert

        (work / "gguf").mkdir(parents=True, exist_ok=True)
        for outtype in ("Q8_0", "F16"):
            if f"llama-{outtype}" not in wanted:
                continue
            path = work / "gguf" / f"{spec.key}-{outtype}.gguf"
            if not path.exists() or path.stat().st_mtime < (ckpt / "model.safetensors").stat().st_mtime:
                gguf_convert.convert(ckpt, path, outtype, log=log)
            ggufs[outtype] = path
        model["gguf_bytes"] = {k: p.stat().st_size for k, p in ggufs.items()}
    else:
        wanted = [s for s in wanted if not s.startswith("llama-")]

    common = {"bundle": str(bundle), "checkpoint": str(ckpt), "threads": args.threads,
              "flash_attn": args.llama_flash_attn}
    log(f"[bench] {spec.key}: loading systems ({', '.join(wanted)})")
    specs = {}
    for name in wanted:
        specs[name] = {**common, "system": name}
        if name.startswith("llama-"):
            specs[name].update(gguf=str(ggufs[name.split("-", 1)[1]]), python=llama["python"])
    built, failed = build_systems(specs)
    model["load_failures"] = failed

    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()

    def count(texts):
        return [len(e.ids) for e in tokenizer.encode_batch(texts)]

    para = next(w for w in WORKLOADS if w.name == "para-128")
    model["agreement"] = agreement(built, seeded_texts(spec, tokenizer, para, 4, manifest.max_length))

    selected = [w for w in WORKLOADS if (not args.workloads or w.name in args.workloads.split(","))]
    rounds_used = []
    for workload in selected:
        n = workload.count(quick)
        if n == 0 or workload.fresh_process or (workload.long and not spec.long_context):
            continue
        if workload.target > manifest.max_length:
            continue
        texts = seeded_texts(spec, tokenizer, workload, n, manifest.max_length)
        lengths = count(texts)
        rounds = args.rounds or workload.n_rounds(quick)
        rounds_used.append(rounds)
        skipped = {name: "beyond the 2048-token context llama.cpp's converter gives v1.5 (n_positions 8192 -> 2048)"
                   for name in built if name.startswith("llama-") and max(lengths) > 2048 + 64}
        here = {name: system for name, system in built.items() if name not in skipped}
        log(f"[bench] {spec.key} {workload.name}: {len(texts)} texts, {sum(lengths)} tokens "
            f"({min(lengths)}-{max(lengths)} per text), {rounds} rounds, systems {', '.join(here)}")
        result = measure_workload(here, workload, texts, lengths, rounds, args.quiet_wait)
        result["skipped"] = skipped
        model["workloads"][workload.name] = result
    model["rounds_note"] = "-".join(str(r) for r in sorted(set(rounds_used))) or "0"
    for system in built.values():
        system.close()
    built.clear()
    gc.collect()

    # fresh processes: load time to first embedding, RSS after load
    repeats = args.load_repeats or (1 if quick else 3)
    short_wl = next(w for w in WORKLOADS if w.name == "short-32")
    short_text = seeded_texts(spec, tokenizer, short_wl, 1, manifest.max_length)[0]
    load_runs = {name: [] for name in wanted if name not in failed}
    for r in range(repeats):
        for name in load_runs:
            got = cold_start(specs[name], short_text)
            log(f"[bench] {spec.key} load {name} #{r + 1}: "
                + (got["error"] if "error" in got else
                   f"{got['load_to_first_embedding_s']:.2f} s, RSS {got['rss_after_load_mb']:.0f} MB"))
            load_runs[name].append(got)
    model["load"], model["load_repeats"] = {}, repeats
    for name, runs in load_runs.items():
        good = [g for g in runs if "error" not in g]
        if not good:
            model["load"][name] = runs[-1]
            continue
        model["load"][name] = {key: statistics.median(g[key] for g in good) for key in good[0]}
        model["load"][name]["runs"] = good

    # one long text, fresh process per system (after a short first one): peak RSS and its time
    long_wl = next(w for w in WORKLOADS if w.fresh_process)
    if spec.long_context and not args.no_long_rss and long_wl.target <= manifest.max_length:
        text = seeded_texts(spec, tokenizer, long_wl, 1, manifest.max_length)[0]
        tokens = count([text])[0]
        names = ["edge-int8"] if quick else ["edge-int8", "edge-fp32", "torch-fp32"]
        long = {"tokens": tokens, "systems": {}, "skipped": {}}
        entry = {"texts": 1, "tokens": tokens, "mean_tokens": tokens, "min_tokens": tokens,
                 "max_tokens": tokens, "rounds": 1, "lengths": [tokens], "systems": {},
                 "skipped": {}, "note": "one run per system in a fresh process (the peak-RSS run)"}
        for name in names:
            if name not in load_runs:
                continue
            if args.quiet_wait > 0:
                wait_quiet(args.quiet_wait, log=log)
            meter = CpuMeter()
            got = cold_start(specs[name], short_text, text)
            share = meter.others()
            log(f"[bench] {spec.key} one {tokens}-token text, {name}: "
                + (got["error"] if "error" in got else
                   f"peak RSS {got['peak_rss_mb']:.0f} MB, {got['long_text_s']:.1f} s")
                + (f" (other processes took {100 * share:.0f}% CPU)" if share > DIRTY else ""))
            long["systems"][name] = got
            if "error" in got:
                entry["systems"][name] = {"error": got["error"]}
            else:
                seconds = got["long_text_s"]
                entry["systems"][name] = {"times_s": [seconds], "median_s": seconds, "tok_s": tokens / seconds,
                                          "texts_s": 1 / seconds, "others_cpu": [share], "others_cpu_max": share}
        for name in wanted:
            why = ("beyond the 2048-token context llama.cpp's converter gives v1.5" if name.startswith("llama-")
                   else None if name in names else "quick mode")
            if why:
                long["skipped"][name] = entry["skipped"][name] = why
        model["long_rss"] = long
        model["workloads"][long_wl.name] = entry
    return model


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 30.0
    WAIT_BUDGET["left_s"] = args.quiet_budget
    started = time.time()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    wants_llama = not args.no_llama and any(s.startswith("llama-") for s in args.systems.split(","))
    suffix = f"-{args.tag}" if args.tag else ""
    deps.ensure("threadpoolctl", "threadpoolctl", log=log)
    plot_ok = deps.ensure("matplotlib", "matplotlib", log=log)
    if args.no_llama:
        llama = {"available": False, "version": None, "message": "llama.cpp SKIPPED: --no-llama given"}
    elif not wants_llama:
        llama = {"available": False, "version": None, "message": "llama.cpp not selected (--systems)"}
    elif not deps.ensure("gguf", "gguf", log=log):
        llama = {"available": False, "version": None,
                 "message": "llama.cpp SKIPPED: the gguf package (needed to write GGUF files) is not installable"}
    else:
        llama = deps.ensure_llama(work / "venvs" / "llama", args.llama_timeout, log=log)
    if not llama["available"]:
        log(f"[bench] {llama['message']}")

    keys = ["v15", "v2moe"] if args.model == "all" else [args.model]
    results = {
        "command": "python bench/run.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "quick": args.quick, "threads": args.threads, "machine": machine_info(llama["version"]),
        "peers": {"llama.cpp": {**llama, "flash_attn": args.llama_flash_attn}},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "models": {},
        "loadavg_start": os.getloadavg(),
    }
    if results["loadavg_start"][0] > 0.5:
        log(f"[bench] WARNING: load average {results['loadavg_start'][0]:.2f} before the run: other "
            "processes compete for the cores and every figure will be low")
    shapes = set()
    for key in keys:
        flops = roofline.model_flops(checkpoints.full_config(checkpoints.MODELS[key]))
        for shape in flops["shapes"]:
            k, n = (int(x) for x in shape.split("x"))
            if n >= 64:
                shapes.add((k, n))
    def gemm(when: str) -> dict:
        log(f"[bench] GEMM roofline ({when}): {len(shapes)} shapes at M={roofline.ROWS}, {args.threads} threads")
        meter = CpuMeter()
        got = roofline.gemm_rates(sorted(shapes), args.threads, 0.3 if args.quick else 1.0)
        got["others_cpu"] = meter.others()
        for name, vals in got["best"].items():
            log(f"[bench]   best {name}: " + ", ".join(f"{s} {v:.0f}" for s, v in vals.items()) + " GFLOP/s")
        return got

    runs = [gemm("start")]
    results["roofline"] = {"gemm": runs[0], "runs": runs}
    for key in keys:
        results["models"][key] = run_model(checkpoints.MODELS[key], args, llama)
        apply_roofline(results["models"][key], runs[0])
        results["duration_s"] = time.time() - started
        (work / f"results{suffix}.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    # a second measurement; per shape the faster of the two is the machine's bound
    runs.append(gemm("end"))
    best = {kind: {shape: max(r["best"][kind][shape] for r in runs) for shape in runs[0]["best"][kind]}
            for kind in ("fp32", "int8")}
    backends = {b: {shape: max(r["backends"][b][shape] for r in runs) for shape in runs[0]["backends"][b]}
                for b in runs[0]["backends"]}
    results["roofline"]["gemm"] = {**runs[0], "best": best, "backends": backends,
                                   "note": "per shape, the faster of the start and end measurements"}
    for model in results["models"].values():
        apply_roofline(model, results["roofline"]["gemm"])

    results["duration_s"] = time.time() - started
    results["loadavg_end"] = os.getloadavg()
    (work / f"results{suffix}.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    text = report.markdown(results)
    png = report.plot(results, work / f"bench{suffix}.png") if plot_ok else None
    if png:
        text += f"\nPlot: {png}\n"
    (work / f"results{suffix}.md").write_text(text, encoding="utf-8")
    print(text)
    log(f"[bench] done in {results['duration_s'] / 60:.1f} min: {work / f'results{suffix}.json'}, "
        f"{work / f'results{suffix}.md'}" + (f", {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
