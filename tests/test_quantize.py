"""What int8 quantizes: every weight matmul and the embedding table, but never the MoE router;
and the blockwise scheme against the dynamic one."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import pytest
from conftest import texts

from edge_embed import Embedder
from edge_embed.manifest import read_manifest
from export.pipeline import ExportOptions, export_bundle

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


@pytest.mark.parametrize("name", ["nomic-v15-tiny", NAME])
def test_blockwise_int8_is_closer_to_fp32_and_independent_of_batch_mates(checkpoint, bundle, tmp_path, name):
    out = tmp_path / "blockwise"
    export_bundle(str(checkpoint(name)), out, ExportOptions(int8_scheme="blockwise"))
    graph = onnx.load(str(out / "model.int8.onnx")).graph
    ops = Counter(node.op_type for node in graph.node)
    assert ops["MatMulNBits"] >= 14 and not ops["DynamicQuantizeMatMul"] + ops["MatMulIntegerToFloat"]
    routers = [n for n in graph.node if n.op_type == "MatMul" and "router" in n.name]
    assert len(routers) == (2 if name == NAME else 0)  # the router stays fp32
    assert read_manifest(out).extra["int8"] == {"scheme": "blockwise"}
    lines = texts(name)
    fp32 = Embedder(out, precision="fp32", providers="cpu").embed(lines)
    errors = {}
    dynamic = bundle(name)  # (the MoE default)
    if name != NAME:  # the dense default is static
        dynamic = tmp_path / "dynamic"
        export_bundle(str(checkpoint(name)), dynamic, ExportOptions(int8_scheme="dynamic", validate=False))
    for scheme, path in (("dynamic", dynamic), ("blockwise", out)):
        model = Embedder(path, precision="int8", providers="cpu")
        batched = model.embed(lines)
        alone = np.concatenate([model.embed([line]) for line in lines])
        errors[scheme] = (1 - (batched * fp32).sum(axis=1)).max(), np.abs(batched - alone).max()
    # measured: 1 - cosine 2.2e-4 vs 4.8e-4 (v1.5), 2.0e-4 vs 6.7e-4 (v2); alone vs batched <= 3e-8 vs 7e-3
    assert errors["blockwise"][0] < 0.7 * errors["dynamic"][0]
    assert errors["blockwise"][1] < 1e-5 < errors["dynamic"][1]
