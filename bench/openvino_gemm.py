"""The int8 GEMM bound of OpenVINO's CPU plugin at a model's shapes (issue 17's "fraction of the int8
GEMM bound"), beside onnxruntime's (bench/roofline.py).

One QDQ MatMul per (K, N) weight shape, M = 2048 rows (16 texts x 128 tokens): activations quantized
per tensor (u8), weights per channel (s8), as the static int8 model has them; compiled with the bf16
precision hint where the CPU has it (the float parts around the int8 kernel, as the runtime runs the
model) and timed as the fastest of repeated calls (a bound is what the machine can do). The model's
bound is the FLOP-weighted mix over its shapes (roofline.model_bound).
"""
from __future__ import annotations

import numpy as np

ROWS = 2048


def qdq_matmul(k: int, n: int, rng: np.random.Generator):
    """A ONNX model: Y = DQ(Q(A)) @ DQ(W_int8), per-channel weight scales."""
    from onnx import TensorProto, helper, numpy_helper
    from roofline import onnx_model

    weights = rng.integers(-127, 128, (k, n), dtype=np.int8)
    nodes = [helper.make_node("QuantizeLinear", ["A", "a_scale", "a_zp"], ["Aq"]),
             helper.make_node("DequantizeLinear", ["Aq", "a_scale", "a_zp"], ["Ad"]),
             helper.make_node("DequantizeLinear", ["W", "w_scale", "w_zp"], ["Wd"], axis=1),
             helper.make_node("MatMul", ["Ad", "Wd"], ["Y"])]
    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "a_scale"),
             numpy_helper.from_array(np.array(128, np.uint8), "a_zp"),
             numpy_helper.from_array(weights, "W"),
             numpy_helper.from_array(np.full(n, 0.001, np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(n, np.int8), "w_zp")]
    return onnx_model(nodes, [helper.make_tensor_value_info("A", TensorProto.FLOAT, [ROWS, k])],
                      [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [ROWS, n])], inits)


def openvino_int8_rates(shapes: list[tuple[int, int]], threads: int, hint: str, min_time: float = 1.0) -> dict:
    """GFLOP/s of OpenVINO's int8 MatMul per "KxN" shape."""
    import openvino as ov
    from roofline import _timed

    rng = np.random.default_rng(0)
    core = ov.Core()
    rates = {}
    for k, n in shapes:
        model = core.read_model(qdq_matmul(k, n, rng).SerializeToString(), b"")
        request = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
                                                    "INFERENCE_PRECISION_HINT": hint}).create_infer_request()
        a = rng.standard_normal((ROWS, k), dtype=np.float32)
        rates[f"{k}x{n}"] = 2.0 * ROWS * k * n / _timed(lambda r=request, a=a: r.infer({"A": a}), min_time) / 1e9
    return rates


def int8_bounds(config: dict, threads: int, hint: str) -> dict:
    """The model's int8 GEMM bound (GFLOP/s) on OpenVINO and on onnxruntime, its linear FLOPs per token."""
    from roofline import gemm_rates, model_bound, model_flops

    flops = model_flops(config)
    shapes = [tuple(int(x) for x in shape.split("x")) for shape in flops["shapes"]]
    shapes = [(k, n) for k, n in shapes if n >= 64]  # the MoE router: fp32 everywhere
    ort_rates = gemm_rates(shapes, threads, 1.0)
    ov_rates = openvino_int8_rates(shapes, threads, hint)
    return {"linear_flops_per_token": flops["linear_flops_per_token"],
            # (model_bound mixes fp32 and int8 rates alike; only OpenVINO's int8 is measured here)
            "openvino_int8_gflops": model_bound(flops, {"best": {"int8": ov_rates, "fp32": ov_rates}})["int8"],
            "onnxruntime_int8_gflops": model_bound(flops, ort_rates)["int8"],
            "openvino_rates": ov_rates, "onnxruntime_rates": ort_rates["best"]["int8"]}
