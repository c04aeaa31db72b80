"""fp32 ONNX -> fp16 ONNX for GPU execution providers (int8 is a CPU optimisation).

Inputs and outputs stay int64 / float32. The rotary tables and the attention mask are computed
at the top level of the graph and stay fp32: positions above 2048 are not exact in fp16, and
the dynamic NTK base needs fp32 to give the same angles as the reference.
"""
from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16

from export.onnx_export import save


def fp32_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes traced outside any submodule ("/Cos", "/Pow_1", ...: rotary tables and mask), and
    MoE routing (router matmul, softmax, top-k: upstream routes in fp32)."""
    def keep(node: onnx.NodeProto) -> bool:
        routing = "router" in node.name or ("/mlp/" in node.name and node.op_type in ("Softmax", "TopK"))
        return node.name.count("/") == 1 or routing

    return [node.name for node in model.graph.node if keep(node)]


def convert_fp16(fp32_path: Path, fp16_path: Path) -> list[str]:
    model = onnx.load(os.fspath(fp32_path))
    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=fp32_nodes(model))
    return save(half, fp16_path)
