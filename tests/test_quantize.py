"""What int8 quantizes: every weight matmul and the embedding table, but never the MoE router."""
from __future__ import annotations

import json

import onnx

NAME = "nomic-v2moe-tiny"


def test_int8_v2_quantizes_experts_attention_and_embeddings_but_not_the_router(bundle):
    path = bundle(NAME)
    graph = onnx.load(str(path / "model.int8.onnx")).graph
    initializers = {t.name: t for t in graph.initializer}
    float_matmuls = [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in initializers]
    assert float_matmuls and all("router" in n.name for n in float_matmuls)
    assert len(float_matmuls) == 2  # one router per MoE layer (layers 1 and 3)
    assert sum(n.op_type == "MatMulInteger" for n in graph.node) >= 4 * 2 + 2 * 8 * 2 + 2 * 2
    table = initializers["embeddings.word_embeddings.weight_quantized"]
    assert tuple(table.dims) == (250048, 32) and table.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    sizes = {p: (path / f"model.{p}.onnx").stat().st_size for p in ("fp32", "int8")}
    assert sizes["int8"] <= 0.3 * sizes["fp32"]


def test_validation_reports_top2_routing_agreement(bundle):
    report = json.loads((bundle(NAME) / "validation.json").read_text())
    fp32, int8 = report["precisions"]["fp32"]["routing"], report["precisions"]["int8"]["routing"]
    assert fp32["top2_agreement"] == 1.0
    assert 0.85 <= int8["top2_agreement"] <= 1.0
    assert len(int8["per_layer"]) == 2 and int8["tokens"] > 100
