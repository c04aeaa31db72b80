"""fp32 ONNX -> int8 ONNX: dynamic quantization, per-channel, with 7-bit weights.

Why 7-bit (reduce_range): on AVX2 CPUs without VNNI, ORT's u8 x s8 kernels add pairs of
products in int16 (vpmaddubsw), which saturates with full 8-bit weights; 7-bit weights keep
every pair sum in range. The router of MoE layers stays fp32: a flipped expert choice
costs far more than the bytes it saves.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from export.moe_fused import quantize_moe_node_int8
from export.onnx_export import needs_external_data, save

KEEP_FP32 = ("router",)  # node-name fragments never quantized


@contextlib.contextmanager
def _quiet_preprocessing_advice():
    """quantize_dynamic logs "Please consider to run pre-processing before quantization" on every
    call. Its pre-processing (shape inference, graph folding) gains nothing on the graphs exported
    here, and users read the line as a fault."""
    def drop(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def fp32_nodes(model: onnx.ModelProto, keep: tuple[str, ...] = KEEP_FP32) -> list[str]:
    return [node.name for node in model.graph.node if any(part in node.name for part in keep)]


def quantize_int8(fp32_path: Path, int8_path: Path, keep: tuple[str, ...] = KEEP_FP32,
                  scheme: str = "dynamic") -> list[str]:
    """Write the int8 model next to the fp32 one; returns the file names written.

    scheme "dynamic": every MatMul as DynamicQuantizeMatMul (u8 activations with one range per
    batch, 7-bit per-channel weights): the fastest int8 kernel, but a text's embedding moves with
    its batch-mates. "blockwise": the weight MatMuls as MatMulNBits (8-bit weights and int8
    activations, both with one scale per block of the inner dimension, per row): slower, about
    ten times closer to fp32, and a text gives (nearly) the same vector in any batch."""
    if scheme not in ("dynamic", "blockwise"):  # (static: export/static_int8.py)
        raise ValueError(f"quantize_int8 writes the dynamic or blockwise scheme, not {scheme!r}")
    model = onnx.load(os.fspath(fp32_path))
    big = needs_external_data(model)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "int8.onnx"
        with _quiet_preprocessing_advice():
            quantize_dynamic(
                os.fspath(fp32_path),
                os.fspath(out),
                per_channel=True,
                reduce_range=True,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul", "Gather"] if scheme == "dynamic" else ["Gather"],
                nodes_to_exclude=fp32_nodes(model, keep),
                use_external_data_format=big,
                extra_options={"MatMulConstBOnly": True},
            )
        quantized = onnx.load(os.fspath(out))
    if scheme == "blockwise":
        quantized = blockwise_matmuls(quantized, keep)
    if any(node.op_type == "MoE" for node in quantized.graph.node):
        quantized = quantize_moe_node_int8(quantized)  # fused experts: com.microsoft.QMoE
    return save(quantized, int8_path)


def _block_size(k: int) -> int | None:
    return next((b for b in (128, 64, 32, 16) if k % b == 0), None)


def blockwise_matmuls(model: onnx.ModelProto, keep: tuple[str, ...] = KEEP_FP32) -> onnx.ModelProto:
    """MatMul(x, W) with a constant 2-D W -> com.microsoft.MatMulNBits: W in 8 bits, symmetric,
    one scale per block of K (per output column); accuracy_level 4 quantizes x per row and block
    to int8 inside the kernel. MatMuls in `keep` nodes (the MoE router) stay fp32."""
    inits = {t.name: t for t in model.graph.initializer}
    kept_fp32 = set(fp32_nodes(model, keep))
    nodes, replaced = [], set()
    for node in model.graph.node:
        weight = inits.get(node.input[1]) if node.op_type == "MatMul" else None
        skip = weight is None or len(weight.dims) != 2 or node.name in kept_fp32
        block = None if skip else _block_size(int(weight.dims[0]))
        if block is None:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weight).astype(np.float32)
        k, n = w.shape
        blocks = w.T.reshape(n, k // block, block)
        scale = np.maximum(np.abs(blocks).max(axis=-1) / 127, np.float32(1e-30)).astype(np.float32)
        q = (np.clip(np.round(blocks / scale[..., None]), -127, 127) + 128).astype(np.uint8)
        name = weight.name
        model.graph.initializer.extend([
            numpy_helper.from_array(q, f"{name}_q8"),
            numpy_helper.from_array(scale, f"{name}_q8_scale"),
            numpy_helper.from_array(np.full((n, k // block), 128, np.uint8), f"{name}_q8_zero"),
        ])
        replaced.add(name)
        nodes.append(helper.make_node(
            "MatMulNBits", [node.input[0], f"{name}_q8", f"{name}_q8_scale", f"{name}_q8_zero"], list(node.output),
            name=f"{node.name}_q8", domain="com.microsoft", K=k, N=n, bits=8, block_size=block, accuracy_level=4,
        ))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    still_used = {name for node in nodes for name in node.input}
    kept = [t for t in model.graph.initializer if t.name not in replaced or t.name in still_used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model
