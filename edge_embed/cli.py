"""The `edge-embed` command: embed, info, eval, bench, serve, export."""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from edge_embed.errors import EdgeEmbedError


def read_texts(source: str) -> list[str]:
    """One text per line from a UTF-8 file, or from stdin when source is '-'. Row i of the output
    is line i (both counted from 1), so a blank line inside the input is an error, not a skipped
    row; blank lines at the end are ignored."""
    name = "standard input" if source == "-" else source
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise EdgeEmbedError(f"cannot read texts from {source}: {exc.strerror}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise EdgeEmbedError(f"{name} is not UTF-8 (line {line}); convert it first, "
                             f"e.g. iconv -f latin1 -t utf-8") from None
    if "\n" not in text:  # classic Mac line ends
        text = text.replace("\r", "\n")
    # "\n" only: str.splitlines() would also split at form feeds (pdftotext's page breaks), U+2028...
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise EdgeEmbedError(f"line {number} of {name} is blank; each line is one text and row i of the "
                                 "output is line i, so remove blank lines first (e.g. grep -v '^[[:space:]]*$')")
    return lines


def check_output(output: str) -> None:
    """Fail before the embedding work, not after it."""
    if output == "-":
        return
    path = Path(output)
    if path.is_dir():
        raise EdgeEmbedError(f"--output {output} is a directory; name a file, e.g. {path / 'embeddings.npy'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise EdgeEmbedError(f"--output {output}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise EdgeEmbedError(f"--output {output} is not writable")


def write_embeddings(vectors: np.ndarray, fmt: str, output: str) -> None:
    if fmt == "npy":
        if output == "-":
            np.save(sys.stdout.buffer, vectors)
        else:
            with open(output, "wb") as stream:  # np.save(path) would append .npy to other names
                np.save(stream, vectors)
        return
    lines = (json.dumps(row.tolist()) + "\n" for row in vectors)
    if output == "-":
        sys.stdout.writelines(lines)
    else:
        with open(output, "w", encoding="utf-8") as stream:
            stream.writelines(lines)


def cmd_embed(args) -> int:
    from edge_embed import Embedder

    check_output(args.output)
    texts = read_texts(args.input)
    if not texts:
        raise EdgeEmbedError(f"no texts in {'standard input' if args.input == '-' else args.input}")
    model = Embedder(args.model, precision=args.precision, providers=args.providers, threads=args.threads)
    vectors = model.embed(texts, task=args.task, dim=args.dim, binary=args.binary,
                          truncation=args.truncation, progress=args.progress)
    write_embeddings(vectors, args.format, args.output)
    print(f"embedded {len(texts)} texts -> {vectors.shape} {vectors.dtype} "
          f"({model.precision}, {model.providers[0]})", file=sys.stderr)
    return 0


def cmd_info(args) -> int:
    from edge_embed.manifest import read_manifest

    manifest = read_manifest(Path(args.bundle))
    data = manifest.to_json()
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    mat = manifest.matryoshka
    print(f"family       {manifest.family}")
    print(f"hidden size  {manifest.hidden_size}")
    print(f"max length   {manifest.max_length} tokens")
    print(f"dims         {mat.min_dim}..{mat.max_dim} ({data['matryoshka']['recipe']})")
    print("tasks        " + ", ".join(f"{t} -> {p!r}" for t, p in manifest.prefixes.items()))
    rotary, moe = manifest.extra.get("rotary") or {}, manifest.extra.get("moe") or {}
    if rotary.get("scaling_factor"):
        print(f"long context dynamic NTK, factor {rotary['scaling_factor']} past "
              f"{rotary.get('max_trained_positions')} tokens")
    if moe:
        print(f"moe          {moe.get('mode')}: top-{moe.get('top_k')} of {moe.get('num_experts')} experts")
    for precision, files in manifest.models.items():
        paths = [Path(args.bundle) / f for f in files]
        missing = [p.name for p in paths if not p.exists()]
        size = sum(p.stat().st_size for p in paths if p.exists())
        notes = [f"{size / 1e6:.1f} MB"]
        if precision == "int8" and manifest.extra.get("int8", {}).get("scheme"):
            notes.append(f"{manifest.extra['int8']['scheme']} scheme")
        if precision in manifest.requires_onnxruntime:
            notes.append(f"needs onnxruntime >= {manifest.requires_onnxruntime[precision]['version']}")
        if missing:
            notes.append(f"MISSING: {', '.join(missing)}")
        print(f"model        {precision}: {files[0]} ({', '.join(notes)})")
    print(f"runs here    {_paths_here(manifest)}")
    validation = Path(args.bundle) / "validation.json"
    if validation.exists():
        report = json.loads(validation.read_text(encoding="utf-8"))
        for precision, figures in report.get("precisions", {}).items():
            if "not_validated" in figures:
                print(f"validation   {precision}: not validated at export: {figures['not_validated']}")
                continue
            print(f"validation   {precision}: max-abs {figures['max_abs']:.2e}, "
                  f"min cosine {figures['min_cosine']:.6f}")
    return 0


def _paths_here(manifest) -> str:
    """Which engine runs precision="auto" and "fp32" on this machine (edge_embed.session.resolve_path)."""
    from edge_embed import openvino_backend
    from edge_embed.int8_saturation import seven_bit_activations
    from edge_embed.session import resolve_path

    paths = []
    for precision in ("auto", "fp32", "bf16"):
        try:
            providers, chosen = resolve_path("auto", precision, manifest)
        except EdgeEmbedError as exc:
            paths.append(f"{precision}: no ({str(exc).split(';')[0]})")
            continue
        engine = f"onnxruntime {providers[0]}"
        if seven_bit_activations(manifest, chosen, providers[0]):
            engine += " (7-bit activations: this CPU has no VNNI)"
        if providers[0] == openvino_backend.OPENVINO:
            engine = f"OpenVINO ({openvino_backend.inference_precision(chosen, manifest)} float parts)"
        paths.append(f"{precision}: {chosen} on {engine}")
    return "; ".join(paths)


def cmd_eval(args) -> int:
    from edge_embed import Embedder
    from edge_embed.evaluate import evaluate

    if args.sts is None and args.retrieval is None:
        raise EdgeEmbedError("nothing to evaluate: pass --sts pairs.tsv and/or --retrieval FOLDER")
    model = Embedder(args.model, precision=args.precision, providers=args.providers, threads=args.threads)
    results = evaluate(model, sts=args.sts, retrieval=args.retrieval, dim=args.dim, limit=args.limit)
    results["model"] = {"bundle": args.model, "precision": model.precision, "dim": args.dim}
    print(json.dumps(results, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def cmd_bench(args) -> int:
    from edge_embed.benchmark import format_report, parse_precisions, run_benchmark

    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()] if args.workloads else None
    result = run_benchmark(Path(args.bundle), parse_precisions(args.precision), args.providers, args.threads,
                           workloads, args.rounds, args.quick, not args.no_long,
                           log=lambda message: print(f"[bench] {message}", file=sys.stderr, flush=True))
    print(format_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def cmd_serve(args) -> int:
    try:
        from edge_embed.server.serve import serve
    except ImportError as exc:  # the [server] extra: fastapi, uvicorn, prometheus-client
        raise EdgeEmbedError(f"edge-embed serve needs the server extra ({exc.name} is missing): "
                             "pip install 'edge-embed[server]'") from None
    return serve(args)


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundles", nargs="+", metavar="BUNDLE",
                   help="bundle directory, or NAME=BUNDLE (default name: the folder's); the first is the default")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--api-key", default=os.environ.get("EDGE_EMBED_API_KEY"),
                   help="require this key (Authorization: Bearer KEY); default: $EDGE_EMBED_API_KEY, else none")
    p.add_argument("--max-length", type=int, help="cut texts at this many tokens (default: the model's)")
    p.add_argument("--max-body-bytes", type=int, default=2 * 1024 * 1024, help="request body limit (413)")
    p.add_argument("--max-texts", type=int, default=2048, help="inputs per request (413)")
    p.add_argument("--max-request-tokens", type=int, default=300_000, help="tokens per request (413)")
    p.add_argument("--max-queue-tokens", type=int, default=1_000_000,
                   help="tokens waiting per model before new requests get 429")
    p.add_argument("--batch-tokens", type=int,
                   help="padded tokens per batch (default: the runtime's, on CPU 1024 for dense models, 2048 for "
                        "MoE); a smaller budget keeps onnxruntime's memory arena, and so the server's RSS, smaller")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_runtime_options(p)


def cmd_export(args) -> int:
    from export.cli import run

    return run(args)


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", default="auto", help="int8 | fp32 | fp16 | bf16 (OpenVINO) | auto (default)")
    p.add_argument("--providers", default="auto", help="auto | cpu | cuda | openvino")
    p.add_argument("--threads", type=int, help="intra-op threads (default: onnxruntime's choice)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-embed", description="Nomic Embed on ONNX Runtime, offline.")
    sub = p.add_subparsers(dest="command", required=True)

    embed = sub.add_parser("embed", help="embed texts (one per line) from a file or stdin")
    embed.add_argument("--model", required=True, help="bundle directory")
    embed.add_argument("--input", default="-", help="text file, one text per line (default: stdin)")
    embed.add_argument("--output", default="-", help="output file (default: stdout)")
    embed.add_argument("--task", help="search_query | search_document | clustering | classification")
    embed.add_argument("--dim", type=int, help="Matryoshka dimension (default: full)")
    embed.add_argument("--binary", action="store_true", help="packed sign bits, uint8 [n, dim/8]")
    embed.add_argument("--format", choices=["npy", "jsonl"], default="npy")
    embed.add_argument("--truncation", choices=["truncate", "error", "chunk"], default="truncate")
    embed.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    add_runtime_options(embed)
    embed.set_defaults(run=cmd_embed)

    info = sub.add_parser("info", help="describe a bundle")
    info.add_argument("bundle")
    info.add_argument("--json", action="store_true", help="print the whole manifest")
    info.set_defaults(run=cmd_info)

    ev = sub.add_parser("eval", help="STS Spearman and retrieval nDCG@10 of a bundle")
    ev.add_argument("--model", required=True, help="bundle directory")
    ev.add_argument("--sts", type=Path, help="pairs.tsv (sentence1, sentence2, score)")
    ev.add_argument("--retrieval", type=Path, help="BEIR-style folder: corpus.jsonl, queries.jsonl, qrels.tsv")
    ev.add_argument("--dim", type=int)
    ev.add_argument("--limit", type=int, help="use only the first N pairs / documents (smoke tests)")
    ev.add_argument("--output", help="also write the results as JSON here")
    add_runtime_options(ev)
    ev.set_defaults(run=cmd_eval)

    bench = sub.add_parser("bench", help="tokens/s, load time and memory of a bundle on this machine")
    bench.add_argument("bundle")
    bench.add_argument("--precision", default="auto", help="one or more of int8, fp32, fp16, auto, comma-separated "
                       "(e.g. int8,fp32: measured side by side)")
    bench.add_argument("--providers", default="cpu", help="cpu (default) | cuda | auto")
    bench.add_argument("--threads", type=int, help="intra-op threads (default: onnxruntime's choice)")
    bench.add_argument("--workloads", help="comma-separated subset of short-32, para-128, chunk-512, long-2048")
    bench.add_argument("--rounds", type=int, help="timed rounds per workload (default 7, 3 for long-2048)")
    bench.add_argument("--quick", action="store_true",
                       help="fewer texts and rounds, one fresh process, no long text: a rough figure in seconds")
    bench.add_argument("--no-long", action="store_true", help="skip the one full-length text in the fresh process")
    bench.add_argument("--json", help="also write every figure (each round's time included) as JSON here")
    bench.set_defaults(run=cmd_bench)

    serve = sub.add_parser("serve", help="serve bundles over HTTP: OpenAI, Ollama, TEI and Nomic APIs "
                           "(needs [server])")
    add_serve_arguments(serve)
    serve.set_defaults(run=cmd_serve)

    try:
        from export.cli import add_arguments
    except ImportError:
        add_arguments = None
    exp = sub.add_parser("export", help="export a Hugging Face checkpoint to a bundle (needs [export])")
    if add_arguments:
        add_arguments(exp)
    exp.set_defaults(run=cmd_export)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line for people at a terminal, not as Python source locations."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        return args.run(args)
    except EdgeEmbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `edge-embed embed ... | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
