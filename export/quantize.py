"""fp32 ONNX -> int8 ONNX: dynamic quantization, per-channel, with 7-bit weights.

Why 7-bit (reduce_range): on AVX2 CPUs without VNNI, ORT's u8 x s8 kernels add pairs of
products in int16 (vpmaddubsw), which saturates with full 8-bit weights; 7-bit weights keep
every pair sum in range. The router of MoE layers stays fp32: a flipped expert choice
costs far more than the bytes it saves.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from export.moe_fused import quantize_moe_node_int8
from export.onnx_export import needs_external_data, save

KEEP_FP32 = ("router",)  # node-name fragments never quantized


def fp32_nodes(model: onnx.ModelProto, keep: tuple[str, ...] = KEEP_FP32) -> list[str]:
    return [node.name for node in model.graph.node if any(part in node.name for part in keep)]


def quantize_int8(fp32_path: Path, int8_path: Path, keep: tuple[str, ...] = KEEP_FP32) -> list[str]:
    """Write the int8 model next to the fp32 one; returns the file names written."""
    model = onnx.load(os.fspath(fp32_path))
    big = needs_external_data(model)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "int8.onnx"
        quantize_dynamic(
            os.fspath(fp32_path),
            os.fspath(out),
            per_channel=True,
            reduce_range=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gather"],
            nodes_to_exclude=fp32_nodes(model, keep),
            use_external_data_format=big,
            extra_options={"MatMulConstBOnly": True},
        )
        quantized = onnx.load(os.fspath(out))
    if any(node.op_type == "MoE" for node in quantized.graph.node):
        quantized = quantize_moe_node_int8(quantized)  # fused experts: com.microsoft.QMoE
    return save(quantized, int8_path)
