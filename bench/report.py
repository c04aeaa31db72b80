"""Results -> markdown tables and a PNG plot."""
from __future__ import annotations

from pathlib import Path

SYSTEM_ORDER = ["edge-int8", "edge-fp32", "torch-fp32", "llama-Q8_0", "llama-F16"]


def _f(x, digits=0, suffix=""):
    if x is None:
        return "-"
    return f"{x:,.{digits}f}{suffix}"


def _pct(x):
    return None if x is None else 100 * x


def _ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def throughput_table(model: dict) -> str:
    rows = ["| workload | tokens/text | system | tokens/s | texts/s | GFLOP/s | % of bound "
            "| % of bound, fastest round | vs torch | vs llama Q8_0 | vs llama F16 | others' CPU |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, wl in model["workloads"].items():
        name = label + (" (contended)" if wl.get("contended") else "")
        systems = wl["systems"]
        torch = systems.get("torch-fp32", {}).get("tok_s")
        q8 = systems.get("llama-Q8_0", {}).get("tok_s")
        f16 = systems.get("llama-F16", {}).get("tok_s")
        for sys_name in [s for s in SYSTEM_ORDER if s in systems]:
            r = systems[sys_name]
            if "error" in r:
                rows.append(f"| {name} | {wl['mean_tokens']:.0f} | {sys_name} | failed: {r['error'][:60]} "
                            "| | | | | | | | |")
                continue
            mine = r["tok_s"]
            rows.append(
                f"| {name} | {wl['mean_tokens']:.0f} | {sys_name} | {_f(mine)} | {_f(r['texts_s'], 2)} "
                f"| {_f(r['gflops'], 1)} | {_f(100 * r['bound_fraction'], 0, '%')} "
                f"| {_f(_pct(r.get('bound_fraction_best')), 0, '%')} "
                f"| {_ratio(mine, torch) if sys_name != 'torch-fp32' else '1.00x'} "
                f"| {_ratio(mine, q8) if sys_name != 'llama-Q8_0' else '1.00x'} "
                f"| {_ratio(mine, f16) if sys_name != 'llama-F16' else '1.00x'} "
                f"| {_f(100 * r.get('others_cpu_max', 0), 0, '%')} |")
        for sys_name, why in wl.get("skipped", {}).items():
            rows.append(f"| {name} | {wl['mean_tokens']:.0f} | {sys_name} | skipped: {why} | | | | | | | | |")
    return "\n".join(rows)


def load_table(model: dict) -> str:
    rows = ["| system | load to first embedding (s) | imports (s) | construct (s) | 1st embed (s) "
            "| RSS after load (MB) | RSS after 1st embedding (MB) | peak RSS (MB) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for sys_name in [s for s in SYSTEM_ORDER if s in model.get("load", {})]:
        r = model["load"][sys_name]
        if "error" in r:
            rows.append(f"| {sys_name} | failed: {r['error'][:80]} | | | | | | |")
            continue
        rows.append(f"| {sys_name} | {_f(r['load_to_first_embedding_s'], 2)} | {_f(r['imports_s'], 2)} "
                    f"| {_f(r['construct_s'], 2)} | {_f(r['first_embedding_s'], 2)} "
                    f"| {_f(r['rss_after_load_mb'])} | {_f(r['rss_after_embed_mb'])} | {_f(r['peak_rss_mb'])} |")
    return "\n".join(rows)


def long_rss_table(model: dict) -> str:
    long = model.get("long_rss") or {}
    if not long:
        return ""
    rows = [f"| system | one text of {long.get('tokens', '?')} tokens: peak RSS (MB) | time to embed it (s) |",
            "|---|---:|---:|"]
    for sys_name in [s for s in SYSTEM_ORDER if s in long.get("systems", {})]:
        r = long["systems"][sys_name]
        if "error" in r:
            rows.append(f"| {sys_name} | failed: {r['error'][:80]} | |")
        else:
            rows.append(f"| {sys_name} | {_f(r['peak_rss_mb'])} | {_f(r['long_text_s'], 1)} |")
    for sys_name, why in long.get("skipped", {}).items():
        rows.append(f"| {sys_name} | skipped: {why} | |")
    return "\n".join(rows)


def sizes_table(model: dict) -> str:
    s = model["sizes"]
    rows = ["| file | MB |", "|---|---:|"]
    for prec, size in s["model_bytes"].items():
        rows.append(f"| edge-embed {prec} ONNX | {size / 1e6:,.0f} |")
    for name, size in (model.get("gguf_bytes") or {}).items():
        rows.append(f"| GGUF {name} | {size / 1e6:,.0f} |")
    rows.append(f"| tokenizer.json | {s['tokenizer_bytes'] / 1e6:,.1f} |")
    if "int8_over_fp32" in s:
        rows.append(f"| **int8 / fp32** | **{100 * s['int8_over_fp32']:.1f}%** |")
    return "\n".join(rows)


def roofline_table(results: dict) -> str:
    rates = results["roofline"]["gemm"]
    backends = rates["backends"]
    shapes = list(backends["numpy_fp32"])
    rows = [f"| GEMM GFLOP/s, M={rates['rows']}, {rates['threads']} threads | {' | '.join(shapes)} |",
            "|---|" + "---:|" * len(shapes)]
    for name, vals in backends.items():
        rows.append(f"| {name} | " + " | ".join(f"{vals[s]:.0f}" for s in shapes) + " |")
    lines = ["\n".join(rows), ""]
    for i, run in enumerate(results["roofline"].get("runs", [])):
        lines.append(f"- GEMM measurement {i + 1}: other processes took {100 * run.get('others_cpu', 0):.0f}% "
                     "of the CPU meanwhile")
    if rates.get("note"):
        lines.append(f"- table: {rates['note']}")
    for key, model in results["models"].items():
        f = model["flops"]
        b = model["gemm_bound"]
        lines.append(f"- {key}: {f['linear_flops_per_token'] / 1e6:.1f} MFLOP/token in matmuls + "
                     f"{f['attention_flops_per_token_per_position'] / 1e3:.0f} kFLOP x S attention "
                     f"(= {(f['linear_flops_per_token'] + 128 * f['attention_flops_per_token_per_position']) / 1e6:.1f}"
                     f" MFLOP/token at S=128); GEMM bound over its shapes: fp32 {b['fp32']:.0f} GFLOP/s, "
                     f"int8 {b['int8']:.0f} GFLOP/s")
    return "\n".join(lines)


def headline(results: dict) -> str:
    """The issue's targets, each with the measured value of this run."""
    out = []
    v15 = results["models"].get("v15")
    v2 = results["models"].get("v2moe")

    def tok(model, wl, system):
        return model["workloads"].get(wl, {}).get("systems", {}).get(system, {})

    if v15:
        for wl in ("para-128", "chunk-512"):
            r = tok(v15, wl, "edge-int8")
            if r.get("tok_s"):
                t = tok(v15, wl, "torch-fp32").get("tok_s")
                q = tok(v15, wl, "llama-Q8_0").get("tok_s")
                best = r.get("bound_fraction_best")
                out.append(f"| v1.5 int8 {wl}: fraction of int8 roofline bound (target >= 85%), median "
                           f"round / fastest round | {100 * r['bound_fraction']:.0f}% / {_f(_pct(best), 0, '%')} |")
                out.append(f"| v1.5 int8 {wl}: vs torch (target >= 2.0x) | {_ratio(r['tok_s'], t)} |")
                out.append(f"| v1.5 int8 {wl}: vs llama.cpp Q8_0 (target >= 2.5x) | {_ratio(r['tok_s'], q)} |")
        load = v15.get("load", {}).get("edge-int8", {})
        if "load_to_first_embedding_s" in load:
            out.append(f"| v1.5 int8 load to first embedding (target <= 1.0 s) "
                       f"| {load['load_to_first_embedding_s']:.2f} s |")
            out.append(f"| v1.5 int8 RSS after load (target <= 300 MB) | {load['rss_after_load_mb']:.0f} MB |")
        out.append(f"| v1.5 int8 size / fp32 size (target <= 30%) | {100 * v15['sizes']['int8_over_fp32']:.1f}% |")
        long = (v15.get("long_rss") or {}).get("systems", {}).get("edge-int8", {})
        if "peak_rss_mb" in long:
            out.append(f"| v1.5 int8 one {v15['long_rss']['tokens']}-token text: peak RSS (target <= 2.5 GB) "
                       f"| {long['peak_rss_mb'] / 1024:.2f} GB |")
    if v2:
        for wl in ("short-32", "para-128", "chunk-512"):
            r = tok(v2, wl, "edge-int8")
            t = tok(v2, wl, "torch-fp32").get("tok_s")
            if r.get("tok_s"):
                out.append(f"| v2-moe int8 {wl}: vs torch (target >= 2.0x) | {_ratio(r['tok_s'], t)} |")
        load = v2.get("load", {}).get("edge-int8", {})
        if "rss_after_load_mb" in load:
            out.append(f"| v2-moe int8 RSS after load | {load['rss_after_load_mb']:.0f} MB |")
        out.append(f"| v2-moe int8 size / fp32 size | {100 * v2['sizes']['int8_over_fp32']:.1f}% |")
    if not out:
        return ""
    return "| target | measured |\n|---|---:|\n" + "\n".join(out)


def markdown(results: dict) -> str:
    m = results["machine"]
    parts = [
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['isa']}), {m['ram_gb']:.0f} GB RAM; "
        f"threads per system: {results['threads']} (intra-op; inter-op 1). "
        f"onnxruntime {m['onnxruntime']}, torch {m['torch']}, llama-cpp-python {m['llama_cpp'] or '-'}.",
        f"Command: `{results['command']}` ({'quick' if results['quick'] else 'full'} mode, "
        f"{results['duration_s'] / 60:.1f} min; load average before {results['loadavg_start'][0]:.2f}, "
        f"after {results.get('loadavg_end', [0])[0]:.2f} (1-min)).",
        f"llama.cpp: {results['peers']['llama.cpp']['message']}",
        "",
    ]
    head = headline(results)
    if head:
        parts += ["### Targets", "", head, ""]
    for model in results["models"].values():
        parts += [f"### {model['title']}", "",
                  f"Throughput: median of {model['rounds_note']} alternating rounds (systems rotate "
                  "order every round); tokens counted with the bundle's tokenizer, special tokens "
                  "included; % of bound = roofline time / measured time (median round, and fastest round: the "
                  "bound itself is the fastest of repeated GEMM calls); others' CPU = the most CPU "
                  "other processes took during one of that system's timed calls (share of all cores; "
                  "anything above a few % makes that row low; rounds above 10% are repeated and "
                  "left out, and a workload marked (contended) had too few clean rounds).", "",
                  throughput_table(model), ""]
        if model.get("agreement"):
            agree = ", ".join(f"{k} {v:.4f}" for k, v in model["agreement"].items())
            parts += [f"Agreement (mean cosine of mean-pooled embeddings vs edge-fp32, 4 texts): {agree}", ""]
        parts += ["Load and memory (fresh process per system, median of "
                  f"{model.get('load_repeats', 1)}):", "", load_table(model), ""]
        long = long_rss_table(model)
        if long:
            parts += ["Long text (fresh process, one text):", "", long, ""]
        parts += ["Files:", "", sizes_table(model), ""]
    parts += ["### Roofline", "", roofline_table(results), ""]
    return "\n".join(parts)


def plot(results: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    models = list(results["models"].values())
    fig, axes = plt.subplots(len(models), 1, figsize=(11, 4.2 * len(models)), squeeze=False)
    colors = {"edge-int8": "#1f77b4", "edge-fp32": "#6baed6", "torch-fp32": "#d62728",
              "llama-Q8_0": "#2ca02c", "llama-F16": "#98df8a"}
    for ax, model in zip(axes[:, 0], models):
        names = list(model["workloads"])
        systems = [s for s in SYSTEM_ORDER if any(s in model["workloads"][w]["systems"] for w in names)]
        width = 0.8 / max(len(systems), 1)
        for j, sys_name in enumerate(systems):
            xs, ys = [], []
            for i, w in enumerate(names):
                r = model["workloads"][w]["systems"].get(sys_name, {})
                if r.get("tok_s"):
                    xs.append(i + (j - (len(systems) - 1) / 2) * width)
                    ys.append(r["tok_s"])
            bars = ax.bar(xs, ys, width, label=sys_name, color=colors.get(sys_name))
            for bar, y in zip(bars, ys):
                ax.text(bar.get_x() + bar.get_width() / 2, y, f"{y:.0f}", ha="center", va="bottom", fontsize=6)
        for i, w in enumerate(names):  # the int8 roofline bound of each workload
            bound = model["workloads"][w].get("bound_tok_s", {}).get("int8")
            if bound:
                ax.hlines(bound, i - 0.45, i + 0.45, colors="black", linestyles="dashed", linewidth=1,
                          label="int8 roofline bound" if i == 0 else None)
        top = [model["workloads"][w].get("bound_tok_s", {}).get("int8") or 0 for w in names]
        top += [r.get("tok_s") or 0 for w in names for r in model["workloads"][w]["systems"].values()]
        ax.set_ylim(0, 1.3 * max(top + [1]))  # room for the legend above the bars
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([f"{w}\n({model['workloads'][w]['mean_tokens']:.0f} tok/text)"
                            + ("\nCONTENDED" if model["workloads"][w].get("contended") else "") for w in names])
        ax.set_ylabel("tokens/s")
        ax.set_title(f"{model['title']} - {results['threads']} threads, {results['machine']['cpu']}")
        ax.legend(fontsize=7, ncol=6, loc="upper center")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
