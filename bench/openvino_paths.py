"""edge-embed's CPU paths against OpenVINO on full-size random v1.5 / v2-moe bundles (issue 17).

    python bench/openvino_paths.py --work build/bench [--quick] [--model v15|v2moe|all] [--threads 2]

Model forward on the same padded int64 batches (16 x 128 tokens; 4 x 512), alternating rounds:
- onnxruntime: fp32, the dynamic int8 model (a `--int8-scheme dynamic` bundle; v2-moe's default) and,
  v1.5 only (the exporter's NNCF pass cannot calibrate the sparse MoE graph), the static int8 model in
  integer operators: the export default for dense models, from a `--int8-scheme both` bundle;
- OpenVINO: the fp32 model with the f32 hint and with bf16 (where the CPU has it), the both bundle's
  static QDQ model (f32 hint, and bf16 float parts as the runtime runs it where the CPU has them), and
  `nncf.quantize` of OpenVINO's conversion of the fp32 model (64 calibration texts, multilingual for
  v2-moe, TRANSFORMER, the peer a user would build themselves; cached in WORK/bundles/KEY-nncf). On
  v2-moe it quantizes all but the experts, which OpenVINO's conversion puts in If bodies (~7 min here).
End to end: `Embedder(bundle, precision="auto")` (the default: onnxruntime's static int8 for v1.5, dynamic
for v2-moe), for v1.5 the dynamic bundle and the both bundle with `providers="openvino"`, embedding texts
(tokenizing included) against the NNCF OpenVINO model fed pre-tokenized, length-sorted batches of 16, on
fixed 128-token texts and on mixed 16-512-token texts. The int8 GEMM bound at the model's shapes on
OpenVINO and onnxruntime (bench/openvino_gemm.py) and each int8 path's fraction of it at 16 x 128 (v1.5).
Writes JSON to --out; prints tokens/s.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from checkpoints import MODELS, ensure_bundle, full_config, write_checkpoint  # noqa: E402
from openvino_gemm import int8_bounds  # noqa: E402

from edge_embed import Embedder, openvino_backend  # noqa: E402
from edge_embed.batching import pad  # noqa: E402
from edge_embed.bench_texts import sentences  # noqa: E402
from edge_embed.measure import alternating_rounds  # noqa: E402

SHAPES = {"16x128": (16, 128), "4x512": (4, 512)}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def texts_of_length(tokenizer, lengths: list[int]) -> list[str]:
    """Texts that tokenize to about the given token counts (cut from the bench sentences)."""
    ids = tokenizer.encode(" ".join(sentences() * 20), add_special_tokens=False).ids
    out = []
    for i, n in enumerate(lengths):
        start = (i * 37) % (len(ids) - n)
        out.append(tokenizer.decode(ids[start:start + n - 2]))
    return out


def ort_forward(path: Path, threads: int):
    from edge_embed.session import create_session

    session = create_session(path, ["CPUExecutionProvider"], threads)
    return lambda feeds: session.run(["last_hidden_state"], feeds)[0]


def ov_forward(model, threads: int, hint: str):
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
                                                      "INFERENCE_PRECISION_HINT": hint})
    request = compiled.create_infer_request()
    return lambda feeds: np.array(request.infer(feeds)[0])


def nncf_int8(fp32: Path, tokenizer, prefixes, cache: Path, multilingual: bool = False):
    """OpenVINO model from nncf.quantize of the bundle's fp32 model (cached as IR)."""
    import nncf
    import openvino as ov

    from export.static_int8 import calibration_texts

    xml = cache / "nncf_int8.xml"
    if not xml.exists():
        start = time.perf_counter()
        items = []
        texts = calibration_texts(prefixes, multilingual=multilingual)
        if multilingual:  # every language: the list holds them one after another
            texts = texts[:: max(1, len(texts) // 64)]
        for text in texts[:64]:
            ids = np.asarray([tokenizer.encode(text).ids[:512]], dtype=np.int64)
            items.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
        model = nncf.quantize(ov.convert_model(str(fp32)), nncf.Dataset(items),
                              model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items))
        ov.save_model(model, str(xml))
        log(f"[bench] nncf.quantize: {time.perf_counter() - start:.0f} s")
    return str(xml)


def rates(calls: dict, tokens: int, rounds: int) -> dict:
    for call in calls.values():  # warm-up
        call()
    seconds = alternating_rounds(calls, rounds)
    return {name: tokens / statistics.median(s) for name, s in seconds.items()}


def run_model(key: str, args) -> dict:
    spec = MODELS[key]
    work = args.work
    checkpoint = write_checkpoint(spec, work / "checkpoints" / key, log=log)
    # v1.5: the --int8-scheme both bundle (onnxruntime's static int8 model, the default for dense models, and
    # the QDQ one OpenVINO runs) and a dynamic one (what it replaces); v2-moe: its default (dynamic) bundle
    both = key == "v15"
    bundle = Path(ensure_bundle(spec, checkpoint, work / "bundles" / (f"{key}-both" if both else key), None,
                                reuse=args.reuse_bundles, log=log, int8_scheme="both" if both else None)["path"])
    dynamic = bundle if not both else Path(ensure_bundle(
        spec, checkpoint, work / "bundles" / f"{key}-dynamic", None, reuse=args.reuse_bundles, log=log,
        int8_scheme="dynamic")["path"])
    from tokenizers import Tokenizer

    model = Embedder(bundle, precision="fp32", providers="cpu")
    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    static = openvino_backend.static_int8_model(model.manifest)
    forwards = {"ort-int8-dynamic": ort_forward(dynamic / "model.int8.onnx", args.threads),
                "ort-fp32": ort_forward(bundle / "model.fp32.onnx", args.threads),
                "ov-fp32": ov_forward(str(bundle / "model.fp32.onnx"), args.threads, "f32")}
    if openvino_backend.cpu_has_bf16():
        forwards["ov-bf16"] = ov_forward(str(bundle / "model.fp32.onnx"), args.threads, "bf16")
    if static is not None:  # v1.5 (NNCF cannot calibrate the sparse MoE graph: v2-moe has none)
        forwards["ort-int8-static"] = ort_forward(bundle / "model.int8.onnx", args.threads)  # the default
        static_model = bundle / model.manifest.models[static][0]
        forwards["ov-int8-static"] = ov_forward(str(static_model), args.threads, "f32")
        hint = openvino_backend.inference_precision("int8", model.manifest)
        if hint != "f32":  # what the runtime runs: the float parts in bf16 where the CPU has it
            forwards[f"ov-int8-static-{hint}"] = ov_forward(str(static_model), args.threads, hint)
    cache = work / "bundles" / f"{key}-nncf"
    cache.mkdir(parents=True, exist_ok=True)
    nncf_xml = nncf_int8(bundle / "model.fp32.onnx", tokenizer, model.manifest.prefixes, cache,
                         multilingual=key == "v2moe")
    forwards["ov-nncf-int8"] = ov_forward(nncf_xml, args.threads, "bf16" if openvino_backend.cpu_has_bf16() else "f32")
    rng = np.random.default_rng(0)
    result = {"forward_tokens_per_s": {}, "end_to_end_tokens_per_s": {}}
    for shape, (batch, length) in SHAPES.items():
        ids = rng.integers(1000, 20000, (batch, length)).astype(np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        calls = {name: (lambda f=f, x=feeds: f(x)) for name, f in forwards.items()}
        result["forward_tokens_per_s"][shape] = rates(calls, ids.size, args.rounds)
        log(f"[bench] {key} forward {shape}: " + json.dumps({k: round(v) for k, v in
                                                             result["forward_tokens_per_s"][shape].items()}))
    if static is not None:  # what fraction of the int8 GEMM bound each int8 path reaches at 16 x 128
        bounds = int8_bounds(full_config(spec), args.threads, hint)
        forward = result["forward_tokens_per_s"]["16x128"]
        on_openvino = {name: "openvino_int8_gflops" for name in forward if name.startswith("ov-") and "int8" in name}
        bounds["fraction_16x128"] = {
            name: forward[name] * bounds["linear_flops_per_token"] / 1e9 / bounds[bound]
            for name, bound in {**on_openvino, "ort-int8-dynamic": "onnxruntime_int8_gflops",
                                "ort-int8-static": "onnxruntime_int8_gflops"}.items()}
        result["int8_gemm_bound"] = bounds
        log(f"[bench] {key} int8 GEMM bound (GFLOP/s): OpenVINO {bounds['openvino_int8_gflops']:.0f}, onnxruntime "
            f"{bounds['onnxruntime_int8_gflops']:.0f}; fraction at 16x128: "
            + json.dumps({k: round(v, 2) for k, v in bounds["fraction_16x128"].items()}))
    # the default (v1.5: onnxruntime's static int8; v2-moe: dynamic) and, v1.5 only, the dynamic int8 it
    # replaces and OpenVINO's int8 asked for by name (the QDQ model, bf16 float parts where the CPU has
    # them, batches padded by length buckets)
    default = Embedder(bundle, precision="auto", threads=args.threads)
    result["default_path"] = repr(default)
    others = {}
    if static is not None:
        others["edge-embed-dynamic"] = Embedder(dynamic, precision="auto", threads=args.threads)
        others["edge-embed-openvino"] = Embedder(bundle, precision="auto", providers="openvino",
                                                 threads=args.threads)
        result["openvino_path"] = repr(others["edge-embed-openvino"])
    n = 32 if args.quick else 128
    for workload, lengths in {"fixed128": [128] * n,
                              "mixed16-512": rng.integers(16, 513, n).tolist()}.items():
        texts = texts_of_length(tokenizer, lengths)
        encoded = sorted((tokenizer.encode(t).ids for t in texts), key=len, reverse=True)
        batches = [pad(encoded[i:i + 16], 0) for i in range(0, len(encoded), 16)]
        peer = forwards["ov-nncf-int8"]
        tokens = sum(len(e) for e in encoded)
        calls = {"edge-embed-default": lambda t=texts: default.embed(t),
                 **{name: (lambda t=texts, e=other: e.embed(t)) for name, other in others.items()},
                 "ov-nncf-int8-pretokenized": lambda b=batches, f=peer: [f({"input_ids": i, "attention_mask": m})
                                                                         for i, m in b]}
        result["end_to_end_tokens_per_s"][workload] = rates(calls, tokens, args.rounds)
        log(f"[bench] {key} end to end {workload}: " + json.dumps(
            {k: round(v) for k, v in result["end_to_end_tokens_per_s"][workload].items()}))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, default=Path("build/bench"))
    p.add_argument("--model", choices=["v15", "v2moe", "all"], default="all")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="3 rounds, 32 texts end to end")
    p.add_argument("--rounds", type=int)
    p.add_argument("--out", type=Path)
    p.add_argument("--reuse-bundles", action="store_true", help="use the cached bundles even if export/ changed")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 9)
    import onnxruntime
    import openvino

    results = {"machine": platform.processor() or platform.machine(), "quick": args.quick, "threads": args.threads,
               "rounds": args.rounds, "versions": {"onnxruntime": onnxruntime.__version__,
                                                   "openvino": openvino.__version__}, "models": {}}
    for key in (["v15", "v2moe"] if args.model == "all" else [args.model]):
        results["models"][key] = run_model(key, args)
    out = args.out or args.work / "openvino_paths.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    log(f"[bench] written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
