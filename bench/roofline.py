"""The compute roofline: measured GEMM GFLOP/s on this machine, and the model's FLOPs.

Bound. The GEMMs of a BERT layer at M = 1024 rows (8 texts x 128 tokens), K x N of the
model's weights, timed with the thread count of the run:
  fp32: numpy (OpenBLAS) and an onnxruntime MatMul graph (MLAS); the faster of the two;
  int8: onnxruntime MatMulInteger (u8 activations x s8 weights, 7-bit weights as the bundle's
        reduce_range quantization makes them) and DynamicQuantizeMatMul (the fused op the
        int8 bundle runs, activation quantization included); the faster of the two.
Each rate is the fastest of repeated calls, and run.py measures twice (start and end of the
run) and keeps the faster. A model's GEMM bound is the FLOP-weighted mix over its own shapes (time = sum of
flops_i / rate_i), so a shape that runs slower on this machine lowers the bound honestly.

Work. FLOPs per token = 2 x (weights used by that token in matmuls) + attention 4 x S x d
per layer (QK^T and PV over the text's own S tokens; padding is not counted). For v2-moe
only the top-k experts and the router count. A system's bound time on a workload is
linear FLOPs / (its GEMM bound: int8 for int8 systems, fp32 otherwise) + attention FLOPs /
fp32 bound (attention stays fp32 in every system); the fraction of the bound is
bound time / measured time.
"""
from __future__ import annotations

import time

import numpy as np

ROWS = 1024


def model_flops(config: dict) -> dict:
    d, layers = config["n_embd"], config["n_layer"]
    f = config.get("n_inner") or 4 * d
    swiglu = config.get("activation_function", "swiglu") == "swiglu"
    if swiglu:
        f = -(-f // 256) * 256
    every = config.get("moe_every_n_layers", 0) or 0
    experts, top_k = config.get("num_experts", 0) or 0, config.get("moe_top_k", 2) or 2
    shapes: dict[tuple[int, int], float] = {}  # (K, N) -> weights per token

    def add(k, n, times=1.0):
        shapes[(k, n)] = shapes.get((k, n), 0.0) + k * n * times

    for i in range(layers):
        add(d, 3 * d)
        add(d, d)
        if every and i % every == 1:
            add(d, f, top_k)
            add(f, d, top_k)
            add(d, experts)  # router, fp32 in every system; tiny
        elif swiglu:
            add(d, f, 2)
            add(f, d)
        else:
            add(d, f)
            add(f, d)
    active = sum(shapes.values())
    return {
        "active_matmul_weights": active,
        "linear_flops_per_token": 2 * active,
        "attention_flops_per_token_per_position": 4 * d * layers,  # x S (the text's length)
        "shapes": {f"{k}x{n}": w for (k, n), w in sorted(shapes.items())},
        "hidden": d,
        "layers": layers,
    }


def text_flops(model: dict, lengths: list[int]) -> tuple[float, float]:
    """(linear, attention) FLOPs to embed texts of these token lengths."""
    lengths = np.asarray(lengths, dtype=np.float64)
    linear = model["linear_flops_per_token"] * lengths.sum()
    attention = model["attention_flops_per_token_per_position"] * (lengths**2).sum()
    return float(linear), float(attention)


def _timed(fn, min_time: float) -> float:
    """The fastest of repeated calls: a bound is what the machine can do, and other processes
    on the machine can only make a call slower."""
    fn()  # warm up
    times = []
    start = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def ort_session(model, threads: int, spinning: bool = True):
    """A CPU session for an in-memory model. Scripts that alternate several sessions turn
    spinning off, so one session's idle threads do not slow the next one's call."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                providers=["CPUExecutionProvider"])


def onnx_model(nodes, inputs, outputs, initializers, name: str = "gemm"):
    """A model over the default and com.microsoft opsets (the contrib ops the bundles use)."""
    from onnx import helper

    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    # IR 10, not the onnx package's newest: onnxruntime 1.23-1.28 reject IR versions they predate.
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 18),
                                                                  helper.make_opsetid("com.microsoft", 1)])


def gemm_rates(shapes: list[tuple[int, int]], threads: int, min_time: float) -> dict:
    """GFLOP/s per (K, N) shape at M = ROWS for each backend."""
    from onnx import TensorProto, helper, numpy_helper
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    out: dict[str, dict[str, float]] = {"numpy_fp32": {}, "ort_fp32": {},
                                         "ort_matmulinteger_u8s8": {}, "ort_dynamicquantizematmul": {}}
    for k, n in shapes:
        key = f"{k}x{n}"
        flops = 2.0 * ROWS * k * n
        a = rng.standard_normal((ROWS, k), dtype=np.float32)
        b = (rng.standard_normal((k, n), dtype=np.float32) * 0.02).astype(np.float32)
        with threadpool_limits(limits=threads):
            out["numpy_fp32"][key] = flops / _timed(lambda a=a, b=b: a @ b, min_time) / 1e9

        fp32 = onnx_model([helper.make_node("MatMul", ["A", "B"], ["Y"])],
                      [helper.make_tensor_value_info("A", TensorProto.FLOAT, [ROWS, k])],
                      [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [ROWS, n])],
                      [numpy_helper.from_array(b, "B")])
        sess = ort_session(fp32, threads)
        out["ort_fp32"][key] = flops / _timed(lambda s=sess, a=a: s.run(None, {"A": a}), min_time) / 1e9

        b8 = rng.integers(-64, 64, (k, n), dtype=np.int8)  # 7-bit weights (reduce_range)
        a8 = rng.integers(0, 256, (ROWS, k), dtype=np.uint8)
        mmi = onnx_model([helper.make_node("MatMulInteger", ["A", "B", "a_zp"], ["Y"])],
                     [helper.make_tensor_value_info("A", TensorProto.UINT8, [ROWS, k])],
                     [helper.make_tensor_value_info("Y", TensorProto.INT32, [ROWS, n])],
                     [numpy_helper.from_array(b8, "B"),
                      numpy_helper.from_array(np.array(128, dtype=np.uint8), "a_zp")])
        sess = ort_session(mmi, threads)
        out["ort_matmulinteger_u8s8"][key] = flops / _timed(lambda s=sess, a=a8: s.run(None, {"A": a}), min_time) / 1e9

        dq = onnx_model([helper.make_node("DynamicQuantizeMatMul", ["A", "B", "b_scale", "b_zp"], ["Y"],
                                      domain="com.microsoft")],
                    [helper.make_tensor_value_info("A", TensorProto.FLOAT, [ROWS, k])],
                    [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [ROWS, n])],
                    [numpy_helper.from_array(b8, "B"),
                     numpy_helper.from_array(np.full(n, 0.001, dtype=np.float32), "b_scale"),
                     numpy_helper.from_array(np.zeros(n, dtype=np.int8), "b_zp")])
        sess = ort_session(dq, threads)
        seconds = _timed(lambda s=sess, a=a: s.run(None, {"A": a}), min_time)
        out["ort_dynamicquantizematmul"][key] = flops / seconds / 1e9
    best = {
        "fp32": {key: max(out["numpy_fp32"][key], out["ort_fp32"][key]) for key in out["numpy_fp32"]},
        "int8": {key: max(out["ort_matmulinteger_u8s8"][key], out["ort_dynamicquantizematmul"][key])
                 for key in out["numpy_fp32"]},
    }
    return {"rows": ROWS, "threads": threads, "backends": out, "best": best}


def model_bound(model: dict, rates: dict) -> dict:
    """The GEMM bound (GFLOP/s) for this model's shape mix, fp32 and int8."""
    mix = {}
    for kind in ("fp32", "int8"):
        seconds = 0.0
        weights = 0.0
        for shape, w in model["shapes"].items():
            k, n = (int(x) for x in shape.split("x"))
            if n < 64:  # the router: too small to matter, fp32 everywhere
                continue
            rate = rates["best"][kind].get(shape)
            if rate is None:
                raise KeyError(f"no GEMM rate measured for {shape}")
            seconds += w / rate
            weights += w
        mix[kind] = weights / seconds
    return mix


def bound_seconds(model: dict, mix: dict, compute: str, lengths: list[int]) -> float:
    linear, attention = text_flops(model, lengths)
    return linear / (mix[compute] * 1e9) + attention / (mix["fp32"] * 1e9)
