"""Which int8 matrix kernel onnxruntime runs fastest on this CPU, at the model's GEMM shapes.

    python bench/int8_kernels.py [--rows 2048] [--threads 2] [--rounds 7] [--out build/bench/int8_kernels.json]

The bundles quantize every Linear for `DynamicQuantizeMatMul` (u8 activations quantized per call,
s8 per-channel weights in 7 bits: export/quantize.py). This script times that choice against the
alternatives onnxruntime offers on CPU, each a one-node graph over the same fp32 input:

- `fp32`: MatMul, the reference;
- `dqmm_u8s8_w7`: what the bundles use; `dqmm_u8s8_w8`: the same with full 8-bit weights (AVX2's
  vpmaddubsw can saturate on those, which is why the bundles keep 7 bits);
- `mmi_s8s8`: MatMulInteger with s8 activations (timed on pre-quantized input: its best case);
- `nbits8_bN`: MatMulNBits, 8-bit block-quantized weights (block N along K) with int8 activations
  (accuracy_level 4).

Sessions do not spin between calls (so one does not slow the next), alternate within every round,
and the median and fastest rounds are reported with each kernel's relative error against fp32.
Run it on the machine you care about: the ranking depends on the instruction set (AVX2, VNNI, ARM).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from roofline import onnx_model, ort_session

from edge_embed.measure import alternating_rounds

SHAPES = [(768, 768), (768, 3072), (3072, 768)]  # v1.5 / v2-moe: q,k,v,out; fc11/fc12; fc2


def _model(node, k: int, n: int, initializers, a_type=TensorProto.FLOAT, y_type=TensorProto.FLOAT):
    return onnx_model([node], [helper.make_tensor_value_info("A", a_type, [None, k])],
                      [helper.make_tensor_value_info("Y", y_type, [None, n])], initializers)


def _per_channel(w: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    scale = (np.abs(w).max(axis=0) / levels).astype(np.float32)
    return np.clip(np.round(w / scale), -levels - 1, levels).astype(np.int8), scale


def _dqmm(w: np.ndarray, levels: int):
    k, n = w.shape
    q, scale = _per_channel(w, levels)
    node = helper.make_node("DynamicQuantizeMatMul", ["A", "B", "b_scale", "b_zp"], ["Y"],
                            domain="com.microsoft")
    model = _model(node, k, n, [numpy_helper.from_array(q, "B"), numpy_helper.from_array(scale, "b_scale"),
                                numpy_helper.from_array(np.zeros(n, np.int8), "b_zp")])
    return model, lambda a: a, lambda y: y


def _mmi_s8s8(w: np.ndarray):
    k, n = w.shape
    q, scale = _per_channel(w, 63)
    node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
    model = _model(node, k, n, [numpy_helper.from_array(q, "B")], a_type=TensorProto.INT8,
                   y_type=TensorProto.INT32)
    a_scale = {}

    def prepare(a):  # symmetric per-tensor s8 activations, outside the timed call
        a_scale["s"] = float(np.abs(a).max() / 127)
        return np.round(a / a_scale["s"]).astype(np.int8)

    return model, prepare, lambda y: y.astype(np.float32) * a_scale["s"] * scale


def _nbits8(w: np.ndarray, block: int):
    k, n = w.shape
    blocks = w.T.reshape(n, k // block, block)
    scale = (np.abs(blocks).max(axis=-1) / 127).astype(np.float32)
    q = (np.round(blocks / scale[..., None]) + 128).astype(np.uint8)
    node = helper.make_node("MatMulNBits", ["A", "B", "scales", "zero_points"], ["Y"], domain="com.microsoft",
                            K=k, N=n, bits=8, block_size=block, accuracy_level=4)
    model = _model(node, k, n, [numpy_helper.from_array(q, "B"), numpy_helper.from_array(scale, "scales"),
                                numpy_helper.from_array(np.full((n, k // block), 128, np.uint8), "zero_points")])
    return model, lambda a: a, lambda y: y


def _fp32(w: np.ndarray):
    k, n = w.shape
    node = helper.make_node("MatMul", ["A", "B"], ["Y"])
    return _model(node, k, n, [numpy_helper.from_array(w, "B")]), lambda a: a, lambda y: y


KERNELS = {
    "fp32": _fp32,
    "dqmm_u8s8_w7": lambda w: _dqmm(w, 63),
    "dqmm_u8s8_w8": lambda w: _dqmm(w, 127),
    "mmi_s8s8": _mmi_s8s8,
    "nbits8_b32": lambda w: _nbits8(w, 32),
    "nbits8_b128": lambda w: _nbits8(w, 128),
    "nbits8_b256": lambda w: _nbits8(w, 256),
}


def measure(rows: int, threads: int, rounds: int) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for k, n in SHAPES:
        w = (rng.standard_normal((k, n)) * 0.02).astype(np.float32)
        a = rng.standard_normal((rows, k)).astype(np.float32)
        ref = a @ w
        runs = {}
        for name, make in KERNELS.items():
            model, prepare, finish = make(w)
            try:
                session = ort_session(model, threads, spinning=False)
                feed = {"A": prepare(a)}
                y = finish(session.run(None, feed)[0])
            except Exception as exc:  # a kernel this build of onnxruntime lacks is reported, not fatal
                out.setdefault(f"{k}x{n}", {})[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            error = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
            runs[name] = (session, feed, error, [])
        seconds = alternating_rounds({name: partial(session.run, None, feed)
                                      for name, (session, feed, _, _) in runs.items()}, rounds)
        for name, (_, _, _, times) in runs.items():
            times.extend(seconds[name])
        flops = 2.0 * rows * k * n
        for name, (_, _, error, times) in runs.items():
            out.setdefault(f"{k}x{n}", {})[name] = {
                "gflops_median": flops / statistics.median(times) / 1e9,
                "gflops_best": flops / min(times) / 1e9, "rel_error": error}
    return out


def table(results: dict) -> str:
    shapes = list(results)
    lines = ["| kernel | " + " | ".join(f"{s} GFLOP/s (best)" for s in shapes) + " | rel. error vs fp32 |",
             "|---|" + "---:|" * (len(shapes) + 1)]
    for name in KERNELS:
        cells, errors = [], []
        for s in shapes:
            entry = results[s].get(name, {"error": "not run"})
            if "error" in entry:
                cells.append("n/a")
                continue
            cells.append(f"{entry['gflops_median']:.0f} ({entry['gflops_best']:.0f})")
            errors.append(entry["rel_error"])
        worst = f"{max(errors):.1e}" if errors else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {worst} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2048, help="M: tokens per batch (default 2048)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    results = measure(args.rows, args.threads, args.rounds)
    print(f"onnxruntime {ort.__version__}, {platform.machine()}, M={args.rows}, {args.threads} threads, "
          f"median of {args.rounds} alternating rounds (fastest in brackets)\n")
    print(table(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": args.rows, "threads": args.threads, "rounds": args.rounds,
                                        "onnxruntime": ort.__version__, "machine": platform.machine(),
                                        "results": results}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
