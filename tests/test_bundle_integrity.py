"""Missing, corrupted or foreign bundle files give a BundleError that says what to do."""
from __future__ import annotations

import json
import re

import onnxruntime as ort
import pytest

from edge_embed import BundleError, Embedder
from edge_embed.manifest import MANIFEST_NAME, read_manifest
from edge_embed.session import check_onnxruntime

V2 = "nomic-v2moe-tiny"


def test_missing_directory(tmp_path):
    with pytest.raises(BundleError, match="does not exist. The runtime loads bundles that the exporter writes"):
        Embedder(tmp_path / "nowhere")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(BundleError, match="is a file; pass the bundle directory"):
        Embedder(tmp_path / "tokenizer.json")


def test_directory_without_manifest(tmp_path):
    with pytest.raises(BundleError, match="not an edge-embed bundle"):
        Embedder(tmp_path)


def test_missing_model_file(copy_bundle):
    target = copy_bundle()
    (target / "model.int8.onnx").unlink()
    with pytest.raises(BundleError, match=r"model.int8.onnx is missing"):
        Embedder(target, precision="int8", providers="cpu")
    Embedder(target, precision="fp32")  # the other precision still loads


def test_corrupted_model_file_fails_the_checksum(copy_bundle):
    target = copy_bundle()
    path = target / "model.fp32.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum mismatch for .*model.fp32.onnx"):
        Embedder(target, precision="fp32")


def test_truncated_model_file_is_reported_as_corrupted_not_as_an_onnxruntime_error(copy_bundle):
    # onnxruntime fails to parse it while the checksum runs beside it: the checksum message wins
    target = copy_bundle()
    path = target / "model.int8.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(BundleError, match="checksum mismatch for .*model.int8.onnx"):
        Embedder(target, precision="int8", providers="cpu")


def test_changed_tokenizer_fails_the_checksum(copy_bundle):
    target = copy_bundle()
    with open(target / "tokenizer.json", "a", encoding="utf-8") as fh:
        fh.write(" ")
    with pytest.raises(BundleError, match="checksum mismatch for .*tokenizer.json"):
        Embedder(target)


def _edit_manifest(target, change):
    path = target / MANIFEST_NAME
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_newer_format_version_is_refused(copy_bundle):
    target = copy_bundle()
    _edit_manifest(target, lambda d: d.update(format_version=99))
    with pytest.raises(BundleError, match="format version 99 is not supported"):
        Embedder(target)


def test_incomplete_manifest(copy_bundle):
    target = copy_bundle()
    _edit_manifest(target, lambda d: d.pop("matryoshka"))
    with pytest.raises(BundleError, match="incomplete or malformed"):
        Embedder(target)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(hidden_size=128), "gives 64-wide states but the manifest says hidden size 128"),
    (lambda d: d["matryoshka"].update(max_dim=128), "dims 6..128 do not fit hidden size 64"),
    (lambda d: d["matryoshka"].update(min_dim=100), "dims 100..64 do not fit"),
    (lambda d: d.update(max_length=0), "max_length is 0, not an integer from 8"),
    (lambda d: d.update(pooling="max"), "pooling 'max' is not one of ['cls', 'mean']"),
    (lambda d: d.update(models={"int4": d["models"]["int8"]}), "models ['int4'] are not among"),
    (lambda d: d.update(pad_token_id=50000), "pad_token_id 50000 is not in the tokenizer's 30522 tokens"),
    (lambda d: d["files"].pop("model.int8.onnx"), "no checksum for model.int8.onnx"),
    (lambda d: d.update(output="pooled"), "has no output 'pooled'"),
    (lambda d: d.update(inputs=["input_ids", "token_type_ids"]), "takes inputs ['attention_mask', 'input_ids']"),
    (lambda d: d.update(int8=10), "int8 is 10, not an object with a text 'scheme'"),  # found by hypothesis
    (lambda d: d.update(moe={"mode": 3}), "moe is {'mode': 3}, not an object with a text 'mode'"),
])
def test_edited_manifest_is_caught_at_load(copy_bundle, change, message):
    target = copy_bundle()
    _edit_manifest(target, change)
    with pytest.raises(BundleError, match=re.escape(message)):
        Embedder(target, precision="int8")


def test_manifest_that_is_a_list(copy_bundle):
    target = copy_bundle()
    (target / MANIFEST_NAME).write_text("[1, 2]")
    with pytest.raises(BundleError, match=r"not an edge-embed manifest \(format='list'\)"):
        Embedder(target)


def test_manifest_that_is_not_json(copy_bundle):
    target = copy_bundle()
    (target / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Embedder(target)


def test_manifest_describes_the_bundle(bundle):
    data = json.loads((bundle("nomic-v15-tiny") / MANIFEST_NAME).read_text())
    assert data["format_version"] == 1 and data["family"] == "nomic-embed-text-v1.5"
    assert data["matryoshka"] == {
        "min_dim": 6, "max_dim": 64, "layer_norm": True, "layer_norm_eps": 1e-5,
        "recipe": "mean_pool -> layer_norm(no affine) -> truncate -> l2_normalize",
    }
    assert data["prefixes"]["search_query"] == "search_query: "
    assert data["inputs"] == ["input_ids", "attention_mask"] and data["output"] == "last_hidden_state"
    assert set(data["models"]) == {"fp32", "int8"}
    assert set(data["files"]) == {"model.fp32.onnx", "model.int8.onnx", "tokenizer.json"}
    assert data["max_length"] == 8192 and data["pad_token_id"] == 0
    assert {"torch", "onnx", "onnxruntime", "edge_embed"} <= set(data["tools"])
    report = json.loads((bundle("nomic-v15-tiny") / "validation.json").read_text())
    assert report["precisions"]["fp32"]["max_abs"] < 1e-5
    assert report["precisions"]["int8"]["min_cosine"] > 0.98


def test_a_fused_int8_moe_bundle_states_the_onnxruntime_it_needs(bundle, monkeypatch):
    fused, sparse = read_manifest(bundle(V2, moe="fused")), read_manifest(bundle(V2))
    assert fused.requires_onnxruntime["int8"]["version"] == "1.28.0" and "fp32" not in fused.requires_onnxruntime
    assert sparse.requires_onnxruntime == {}
    # onnxruntime 1.23.1-1.27.0 reject QMoE's router_weights input; this one says so up front
    monkeypatch.setattr(ort, "__version__", "1.27.0")
    with pytest.raises(BundleError, match=r"int8 model needs onnxruntime >= 1.28.0 .*--moe fused.*"
                                          r"this is onnxruntime 1.27.0: pip install -U 'onnxruntime>=1.28.0'"):
        Embedder(bundle(V2, moe="fused"), precision="int8")
    assert Embedder(bundle(V2, moe="fused"), precision="fp32").precision == "fp32"
    assert Embedder(bundle(V2), precision="int8").precision == "int8"


def test_onnxruntime_versions_compare_by_release():
    need = {"version": "1.28.0", "why": ""}
    check_onnxruntime(need, "int8", installed="1.28.0")
    check_onnxruntime(need, "int8", installed="1.32.0")
    check_onnxruntime(None, "int8", installed="1.23.1")
    for older in ("1.27.0", "1.9.0", "1.25.0.dev20260417008"):
        with pytest.raises(BundleError, match=f"this is onnxruntime {re.escape(older)}"):
            check_onnxruntime(need, "int8", installed=older)


def test_the_order_of_inputs_in_the_manifest_does_not_matter(copy_bundle, bundle):
    target = copy_bundle()
    _edit_manifest(target, lambda d: d["inputs"].reverse())
    texts = ["the runtime feeds inputs by name", "so their order in the manifest is irrelevant"]
    expected = Embedder(bundle("nomic-v15-tiny"), precision="fp32").embed(texts)
    assert (Embedder(target, precision="fp32").embed(texts) == expected).all()
