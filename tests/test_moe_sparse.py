"""The sparse MoE graph is sparse: each expert's matmuls see only the real tokens routed to it,
and the graph still gives the reference results when some experts get no tokens at all."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import golden, texts

from edge_embed import Embedder

NAME = "nomic-v2moe-tiny"


def expert_inputs(model: onnx.ModelProto) -> dict[int, list[str]]:
    """Per MoE layer, the activations fed to each expert's first matmul (gathered tokens)."""
    produced_by = {out: node for node in model.graph.node for out in node.output}
    inputs: dict[int, list[str]] = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or "/mlp/" not in node.name:
            continue
        source = produced_by.get(node.input[0])
        if source is not None and source.op_type == "Gather":
            layer = int(node.name.split("/layers.")[1].split("/")[0])
            inputs.setdefault(layer, []).append(node.input[0])
    return inputs


@pytest.fixture(scope="module")
def probed(bundle):
    """(session exposing the expert inputs, their names per layer, embedder)"""
    path = bundle(NAME) / "model.fp32.onnx"
    model = onnx.load(str(path))
    names = expert_inputs(model)
    for layer_names in names.values():
        for name in layer_names:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session, names, Embedder(bundle(NAME), precision="fp32")


def test_every_moe_layer_has_one_gathered_matmul_per_expert(probed):
    _, names, _ = probed
    assert sorted(names) == golden(NAME)["meta.moe_layers"].tolist()
    assert all(len(layer_names) == 8 for layer_names in names.values())


def test_experts_see_only_their_routed_real_tokens(probed):
    session, names, _ = probed
    ref = golden(NAME)
    ids, mask = ref["none.input_ids"], ref["none.attention_mask"]
    real = int(mask.sum())
    flat = [n for layer in sorted(names) for n in names[layer]]
    outputs = dict(zip(flat, session.run(flat, {"input_ids": ids, "attention_mask": mask})))
    for layer in sorted(names):
        top2 = ref[f"none.top2.layer{layer}"][mask.astype(bool)]  # [real tokens, 2]
        rows = [outputs[n].shape[0] for n in names[layer]]
        assert rows == [int((top2 == e).sum()) for e in range(8)]
        assert sum(rows) == 2 * real < 8 * ids.size  # padding never reaches an expert


def test_reference_results_when_some_experts_get_no_tokens(probed):
    session, names, embedder = probed
    ref = golden(NAME)
    corpus = texts(NAME)
    flat = [n for layer in sorted(names) for n in names[layer]]
    idle_seen = False
    for i in (0, 7):  # "Hello!" (4 tokens) and a short emoji line: 8-16 routing slots
        encoded = embedder.tokenizer.encode([corpus[i]], embedder.prefix("search_query"))
        ids = encoded.sequences[0][None]
        rows = [o.shape[0] for o in session.run(flat, {"input_ids": ids, "attention_mask": np.ones_like(ids)})]
        idle_seen |= 0 in rows
        got = embedder.embed([corpus[i]], task="search_query", dim=32)
        np.testing.assert_allclose(got[0], ref["search_query.single.embedding_d32"][i], atol=1e-5)
    assert idle_seen, "expected an expert with no tokens for such short texts"
