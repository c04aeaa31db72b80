"""The exported attention block against onnxruntime's GroupQueryAttention, on CPU.

    python bench/attention_ops.py [--threads 2] [--rounds 9]

What the bundles run per layer (export/attention_fused.py): two `RotaryEmbedding`s, the padding
mask folded into a 65th head dimension (two Concats), and `MultiHeadAttention`, whose CPU flash
kernel never holds the S x S scores. The candidate: `GroupQueryAttention` with `causal=0` and
`do_rotary=1`, which takes the packed q/k/v of one GEMM and applies rotary and key padding
(`seqlens_k`) itself, but whose CPU kernel materialises the attention probabilities. Both get the
same q/k/v (one padded row per batch); the script checks they agree, then times them alternately.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from roofline import onnx_model, ort_session

HEADS, HEAD_DIM, BASE = 12, 64, 1000.0  # v1.5's attention
SHAPES = [(64, 32), (16, 128), (4, 512)]  # 2,048 tokens per batch, as the CPU planner cuts them


def _caches(max_len: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    inv_freq = 1.0 / BASE ** (np.arange(0, HEAD_DIM, 2) / HEAD_DIM)
    angles = np.arange(max_len)[:, None] * inv_freq[None]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def _value(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def exported_block(cos, sin):
    f, hidden = TensorProto.FLOAT, HEADS * HEAD_DIM
    nodes = [
        helper.make_node("RotaryEmbedding", ["q", "pos", "cos", "sin"], ["q_rot"], domain="com.microsoft",
                         num_heads=HEADS),
        helper.make_node("RotaryEmbedding", ["k", "pos", "cos", "sin"], ["k_rot"], domain="com.microsoft",
                         num_heads=HEADS),
        helper.make_node("Reshape", ["q_rot", "by_head"], ["q4"]),
        helper.make_node("Reshape", ["k_rot", "by_head"], ["k4"]),
        helper.make_node("Concat", ["q4", "ones"], ["q5"], axis=3),  # q . k gains 1 x mask bias
        helper.make_node("Concat", ["k4", "mask_bias"], ["k5"], axis=3),
        helper.make_node("Reshape", ["q5", "flat"], ["q65"]),
        helper.make_node("Reshape", ["k5", "flat"], ["k65"]),
        helper.make_node("MultiHeadAttention", ["q65", "k65", "v"], ["out"], domain="com.microsoft",
                         num_heads=HEADS, scale=HEAD_DIM ** -0.5),
    ]
    return onnx_model(
        nodes,
        [_value("q", f, [None, None, hidden]), _value("k", f, [None, None, hidden]),
         _value("v", f, [None, None, hidden]), _value("pos", TensorProto.INT64, [None, None]),
         _value("ones", f, [None, None, HEADS, 1]), _value("mask_bias", f, [None, None, HEADS, 1])],
        [_value("out", f, None)],
        [numpy_helper.from_array(cos, "cos"), numpy_helper.from_array(sin, "sin"),
         numpy_helper.from_array(np.array([0, 0, HEADS, HEAD_DIM], np.int64), "by_head"),
         numpy_helper.from_array(np.array([0, 0, HEADS * (HEAD_DIM + 1)], np.int64), "flat")],
        name="exported")


def gqa_block(cos, sin):
    node = helper.make_node("GroupQueryAttention", ["qkv", "", "", "", "", "seqlens_k", "total", "cos", "sin"],
                            ["out", "present_key", "present_value"], domain="com.microsoft",
                            num_heads=HEADS, kv_num_heads=HEADS, causal=0, do_rotary=1)
    return onnx_model(
        [node],
        [_value("qkv", TensorProto.FLOAT, [None, None, 3 * HEADS * HEAD_DIM]),
         _value("seqlens_k", TensorProto.INT32, [None]), _value("total", TensorProto.INT32, [])],
        [_value("out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(cos, "cos"), numpy_helper.from_array(sin, "sin")], name="gqa")


def feeds(batch: int, seq: int, rng) -> tuple[dict, dict, np.ndarray]:
    hidden = HEADS * HEAD_DIM
    qkv = rng.standard_normal((batch, seq, 3 * hidden), dtype=np.float32)
    lengths = np.full(batch, seq, np.int32)
    lengths[-1] = seq - seq // 8  # one right-padded text
    mask_bias = np.zeros((batch, seq, HEADS, 1), np.float32)
    for row, n in enumerate(lengths):
        mask_bias[row, n:] = -1e4
    exported = {"q": qkv[..., :hidden].copy(), "k": qkv[..., hidden:2 * hidden].copy(),
                "v": qkv[..., 2 * hidden:].copy(), "pos": np.tile(np.arange(seq, dtype=np.int64), (batch, 1)),
                "ones": np.ones((batch, seq, HEADS, 1), np.float32), "mask_bias": mask_bias}
    gqa = {"qkv": qkv, "seqlens_k": lengths - 1, "total": np.array(seq, np.int32)}
    return exported, gqa, lengths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=9)
    args = p.parse_args(argv)
    cos, sin = _caches()
    sessions = {"exported": ort_session(exported_block(cos, sin), args.threads, spinning=False),
                "gqa": ort_session(gqa_block(cos, sin), args.threads, spinning=False)}
    rng = np.random.default_rng(0)
    print(f"onnxruntime {ort.__version__}, {args.threads} threads, median of {args.rounds} alternating rounds\n")
    print("| texts x tokens | exported block ms | GroupQueryAttention ms | GQA / exported | max abs diff |")
    print("|---|---:|---:|---:|---:|")
    for batch, seq in SHAPES:
        inputs = dict(zip(("exported", "gqa"), feeds(batch, seq, rng)[:2]))
        lengths = inputs["gqa"]["seqlens_k"] + 1
        outs = {name: s.run(None, inputs[name])[0] for name, s in sessions.items()}
        diff = max(float(np.abs(outs["exported"][row, :n] - outs["gqa"][row, :n]).max())
                   for row, n in enumerate(lengths))  # padded rows are unspecified in both
        times = {name: [] for name in sessions}
        for r in range(args.rounds):
            for name in (list(sessions) if r % 2 == 0 else list(sessions)[::-1]):
                start = time.perf_counter()
                sessions[name].run(None, inputs[name])
                times[name].append(time.perf_counter() - start)
        exported, gqa = (statistics.median(times[n]) * 1e3 for n in ("exported", "gqa"))
        print(f"| {batch} x {seq} | {exported:.1f} | {gqa:.1f} | {gqa / exported:.2f} | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
