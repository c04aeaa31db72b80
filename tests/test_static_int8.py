"""The static int8 scheme on onnxruntime (the default for dense models): its integer-operator form against
the QDQ model it is made from, batch independence and fidelity on real weights (all-MiniLM-L6-v2), the
7-bit activations of CPUs without VNNI, and what "auto" exports."""
from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from conftest import texts
from test_openvino import alone_vs_batched, cosines, mixed_texts

from edge_embed import Embedder, int8_saturation
from edge_embed.session import create_session
from export import pipeline
from export.pipeline import ExportOptions, export_bundle
from export.validate import ValidationError


def ops(path) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def token_states(path, ids: np.ndarray) -> np.ndarray:
    session = create_session(path, ["CPUExecutionProvider"])
    states = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    return states.reshape(-1, states.shape[-1])


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_auto_exports_static_int8_for_dense_models_and_dynamic_for_moe(bundle):
    dense = Embedder(bundle("nomic-v15-tiny"), precision="int8", providers="cpu")
    section = dense.manifest.extra["int8"]
    assert (section["scheme"], section["form"], section["weight_bits"]) == ("static", "integer_operators", 8)
    # one quantizer for q/k/v, out_proj, fc11/fc12, fc2 in each of the fixture's 2 layers
    assert len(section["activation_quantizers"]) == 2 * 4
    assert all(isinstance(scale, float) and 0 <= zero <= 255 for _, scale, _, zero in section["activation_quantizers"])
    found = ops(bundle("nomic-v15-tiny") / "model.int8.onnx")
    assert found["MatMulIntegerToFloat"] == 2 * 7 and found["QuantizeLinear"] == 2 * 4
    assert not found["DynamicQuantizeLinear"] + found["DequantizeLinear"]  # the table's rows dequantized after Gather
    graph = onnx.load(bundle("nomic-v15-tiny") / "model.int8.onnx", load_external_data=False).graph
    read = {name for node in graph.node for name in node.input}
    assert [t.name for t in graph.initializer if t.name not in read] == []  # no dead weights (ORT warns of them)
    moe = Embedder(bundle("nomic-v2moe-tiny"), precision="int8", providers="cpu")
    assert moe.manifest.extra["int8"] == {"scheme": "dynamic"}


def test_auto_falls_back_to_dynamic_without_nncf(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "_nncf_installed", lambda: False)
    export_bundle(str(checkpoint("nomic-v15-tiny")), tmp_path / "b", ExportOptions(validate=False))
    assert "NNCF is not installed: dynamic int8" in capsys.readouterr().err
    assert Embedder(tmp_path / "b", precision="int8", providers="cpu").manifest.extra["int8"] == {"scheme": "dynamic"}


@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2", "nomic-v15-tiny"])
def test_integer_form_computes_what_the_qdq_model_does(name, minilm_both, checkpoint, tmp_path):
    """Same ranges, same integer grid (s8 activations shifted to u8), biases (MiniLM) and SmoothQuant
    factors (v1.5's gated MLP and MultiHeadAttention) folded: onnxruntime running both files gives nearly
    the same token states."""
    both = minilm_both
    if name != "all-MiniLM-L6-v2":
        both = tmp_path / "both"
        export_bundle(str(checkpoint(name)), both, ExportOptions(int8_scheme="both", validate=False))
        smoothing = [n for n in onnx.load(str(both / "model.int8.onnx"), load_external_data=False).graph.node
                     if n.op_type == "Mul" and "smooth_quant" in n.name]
        assert len(smoothing) == 2 * 2  # of 4 a layer, the 2 after a LayerNormalization are left
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 20000, (3, 40)).astype(np.int64)  # (both vocabularies have 30,522+ ids)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS], [SEP]
    integer = token_states(both / "model.int8.onnx", ids)
    qdq = token_states(both / "model.int8.static.onnx", ids)
    # measured 0.9995 / 0.9999 (float sums in another order, and a quantizer turns a last bit into a step);
    # a wrong zero point or fold gives far less
    assert row_cosines(integer, qdq).min() >= 0.999


@pytest.mark.slow
def test_static_int8_on_onnxruntime_is_batch_independent_and_close_to_fp32(minilm_both):
    model = Embedder(minilm_both, precision="int8", providers="cpu")
    assert "activations=" not in repr(model) or int8_saturation.cpu_saturates_u8s8()
    lines = mixed_texts()
    assert alone_vs_batched(model, lines).min() >= 0.99999  # the dynamic scheme: < 0.99999 (test_openvino)
    fp32 = Embedder(minilm_both, precision="fp32", providers="cpu").embed(lines)
    assert cosines(model.embed(lines), fp32).min() >= 0.995  # measured 0.9972


@pytest.mark.slow
def test_seven_bit_activations_where_the_cpu_has_no_vnni(minilm_both, monkeypatch):
    """On x86 without VNNI the activation quantizers get twice the scale and half the zero point (no int16
    sum can saturate): still batch-independent, still close to fp32, and really different arithmetic."""
    lines = mixed_texts()
    monkeypatch.setattr(int8_saturation, "cpu_saturates_u8s8", lambda *args: False)
    eight_bit = Embedder(minilm_both, precision="int8", providers="cpu").embed(lines)
    monkeypatch.setattr(int8_saturation, "cpu_saturates_u8s8", lambda *args: True)
    model = Embedder(minilm_both, precision="int8", providers="cpu")
    assert model.int8_activation_bits == 7 and "activations='7-bit (no VNNI)'" in repr(model)
    seven_bit = model.embed(lines)
    assert not np.array_equal(seven_bit, eight_bit)
    assert alone_vs_batched(model, lines).min() >= 0.99999
    fp32 = Embedder(minilm_both, precision="fp32", providers="cpu").embed(lines)
    assert cosines(seven_bit, fp32).min() >= 0.99  # measured 0.9965
    assert Embedder(minilm_both, precision="fp32", providers="cpu").int8_activation_bits is None


def test_which_cpus_saturate():
    assert int8_saturation.cpu_saturates_u8s8("flags : fpu sse2 avx2 fma\n", "x86_64")  # AVX2 laptop
    assert int8_saturation.cpu_saturates_u8s8("flags : avx2 avx512f avx512bw\n", "x86_64")  # Skylake-X
    assert not int8_saturation.cpu_saturates_u8s8("flags : avx2 avx512f avx512_vnni\n", "x86_64")
    assert not int8_saturation.cpu_saturates_u8s8("flags : avx2 avx_vnni\n", "AMD64")  # Alder Lake
    assert not int8_saturation.cpu_saturates_u8s8("Features : fp asimd\n", "aarch64")  # no vpmaddubsw on ARM


def test_seven_bit_values_only_for_static_int8_on_onnxruntime_cpu():
    static = SimpleNamespace(extra={"int8": {"scheme": "static", "form": "integer_operators", "weight_bits": 8,
                                             "activation_quantizers": [["s", 0.02, "z", 131], ["t", 0.5, "y", 0]]}})
    values = int8_saturation.seven_bit_activations(static, "int8", "CPUExecutionProvider", saturates=True)
    assert values["s"] == np.float32(0.04) and values["z"] == 66 and values["z"].dtype == np.uint8
    assert values["t"] == np.float32(1.0) and values["y"] == 0
    assert not int8_saturation.seven_bit_activations(static, "int8", "CPUExecutionProvider", saturates=False)
    assert not int8_saturation.seven_bit_activations(static, "fp32", "CPUExecutionProvider", saturates=True)
    assert not int8_saturation.seven_bit_activations(static, "int8", "CUDAExecutionProvider", saturates=True)
    dynamic = SimpleNamespace(extra={"int8": {"scheme": "dynamic"}})  # 7-bit weights already
    assert not int8_saturation.seven_bit_activations(dynamic, "int8", "CPUExecutionProvider", saturates=True)


def test_tiny_fixture_static_int8_matches_its_fp32(bundle):
    name = "nomic-v15-tiny"
    fp32 = Embedder(bundle(name), precision="fp32", providers="cpu").embed(texts(name))
    int8 = Embedder(bundle(name), precision="int8", providers="cpu").embed(texts(name))
    assert cosines(int8, fp32).min() >= 0.99


def test_info_says_when_activations_run_in_7_bits(bundle, monkeypatch, capsys):
    from edge_embed.cli import main

    monkeypatch.setattr(int8_saturation, "cpu_saturates_u8s8", lambda *args: True)
    assert main(["info", str(bundle("nomic-v15-tiny"))]) == 0
    out = capsys.readouterr().out
    assert "auto: int8 on onnxruntime CPUExecutionProvider (7-bit activations: this CPU has no VNNI)" in out
    assert "int8: model.int8.onnx" in out and "static scheme" in out


@pytest.mark.parametrize("field, value", [("weight_bits", None), ("weight_bits", "8"), ("form", "qdq"),
                                          ("activation_quantizers", [["s", -1.0, "z", 0]]),
                                          ("activation_quantizers", [["s", 0.1, "z", 300]])])
def test_a_damaged_integer_form_section_is_a_bundle_error(copy_bundle, field, value):
    import json

    from edge_embed.errors import BundleError
    from edge_embed.manifest import MANIFEST_NAME

    target = copy_bundle()
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    manifest["int8"][field] = value
    (target / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="int8"):
        Embedder(target)


def test_the_rewrite_leaves_a_quantized_activation_that_other_nodes_read(tmp_path):
    """A quantizer whose value also feeds a node that is not a weight MatMul keeps its DequantizeLinear;
    the MatMul (with its bias) becomes MatMulIntegerToFloat and computes the same numbers."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from export.static_for_onnxruntime import activation_quantizers, integer_operators

    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(3, np.int8), "x_zero"),
             numpy_helper.from_array(rng.integers(-127, 128, (4, 3)).astype(np.int8), "w"),
             numpy_helper.from_array(np.array([0.01, 0.02, 0.03], np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(3, np.int8), "w_zero"),
             numpy_helper.from_array(np.array([0.5, -1.0, 2.0], np.float32), "bias")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wd"], axis=1),
             helper.make_node("MatMul", ["xd", "wd"], ["mm"], name="fc"),
             helper.make_node("Add", ["mm", "bias"], ["linear"]),
             helper.make_node("Relu", ["xd"], ["relu"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("linear", "relu")],
                              inits)
    qdq = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    integer = onnx.ModelProto()
    integer.CopyFrom(qdq)
    integer = integer_operators(integer)
    assert Counter(n.op_type for n in integer.graph.node) == Counter(
        {"QuantizeLinear": 2, "DequantizeLinear": 1, "MatMulIntegerToFloat": 1, "Relu": 1})
    assert activation_quantizers(integer) == [["x_scale", pytest.approx(0.05), "xq_u8_zero", 131]]
    x = {"x": rng.normal(0, 1, (2, 4)).astype(np.float32)}
    want = ort.InferenceSession(qdq.SerializeToString()).run(None, x)
    got = ort.InferenceSession(integer.SerializeToString()).run(None, x)
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)
    np.testing.assert_array_equal(got[1], want[1])


def test_auto_writes_the_dynamic_scheme_when_static_int8_misses_the_gate(checkpoint, tmp_path, capsys):
    """The tiny v1.5 fixture: static min cosine 0.9974, dynamic 0.9994 against fp32; a gate between them."""
    out = tmp_path / "b"
    report = export_bundle(str(checkpoint("nomic-v15-tiny")), out, ExportOptions(int8_min_cosine=0.999))
    assert "static int8 missed the gate" in capsys.readouterr().err
    assert "0.999 required" in report["int8_static_missed"] and not report.get("int8_failed")
    model = Embedder(out, precision="int8", providers="cpu")
    assert model.manifest.extra["int8"] == {"scheme": "dynamic"}
    assert "DynamicQuantizeLinear" in ops(out / "model.int8.onnx")
    with pytest.raises(ValidationError, match="0.999"):  # asked for by name, static is not swapped for dynamic
        export_bundle(str(checkpoint("nomic-v15-tiny")), tmp_path / "c",
                      ExportOptions(int8_scheme="static", int8_min_cosine=0.999))
