"""A bundle may only name files inside itself: manifest entries and ONNX external-data locations
that leave it give BundleError before onnxruntime opens anything; bundles made of symlinks (the
Hugging Face cache) still load; an exported bundle holds no path of the exporting machine."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import external_data_helper

import edge_embed.session
from edge_embed import BundleError, Embedder
from edge_embed.manifest import MANIFEST_NAME, sha256_file, uncontained
from edge_embed.onnx_refs import external_data_locations

TEXTS = ["a contained bundle", "search_query: where are the weights?"]


@pytest.fixture
def onnxruntime_never_opens(monkeypatch, bundle):
    """Records every InferenceSession onnxruntime would create (a fake only to observe that none is).
    The tiny bundle is exported first: the export itself opens its models."""
    bundle("nomic-v15-tiny")
    opened = []

    def refuse(path, *args, **kwargs):
        opened.append(path)
        raise AssertionError(f"onnxruntime was asked to open {path}")

    monkeypatch.setattr(edge_embed.session.ort, "InferenceSession", refuse)
    return opened


def _edit(target: Path, change) -> None:
    path = target / MANIFEST_NAME
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _point_fp32_at(target: Path, name: str) -> None:
    """The manifest's fp32 model becomes `name`, with that file's true checksum (the issue's case)."""
    def change(data):
        data["models"]["fp32"] = [name]
        data["files"][name] = sha256_file((target / name) if not Path(name).is_absolute() else Path(name))
    _edit(target, change)


def test_a_manifest_naming_a_model_outside_through_dotdot_is_refused_before_loading(copy_bundle,
                                                                                   onnxruntime_never_opens):
    target = copy_bundle()
    other = target.parent / "other"
    other.mkdir()
    shutil.copy(target / "model.fp32.onnx", other / "model.fp32.onnx")
    _point_fp32_at(target, "../other/model.fp32.onnx")
    with pytest.raises(BundleError, match=r"names the file '\.\./other/model\.fp32\.onnx', which leaves the bundle"):
        Embedder(target, precision="fp32")
    assert onnxruntime_never_opens == []


def test_a_manifest_naming_an_absolute_path_is_refused_before_loading(copy_bundle, tmp_path,
                                                                     onnxruntime_never_opens):
    target = copy_bundle()
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(target / "model.fp32.onnx", outside)
    _point_fp32_at(target, str(outside))
    with pytest.raises(BundleError, match=r"names the file '/.*elsewhere\.onnx', an absolute path"):
        Embedder(target, precision="fp32")
    assert onnxruntime_never_opens == []


@pytest.mark.parametrize("name", ["C:/models/model.onnx", "c:model.onnx", "\\\\server\\share\\model.onnx",
                                  "..\\model.onnx", "sub/../../model.onnx", "", ".", "a\x00b"])
def test_windows_paths_and_other_escapes_are_refused_on_every_os(copy_bundle, name, onnxruntime_never_opens):
    target = copy_bundle()
    _edit(target, lambda d: (d["models"].update(fp32=[name]), d["files"].update({name: "0" * 64})))
    with pytest.raises(BundleError, match="names the file"):
        Embedder(target, precision="fp32")
    assert onnxruntime_never_opens == []


@pytest.mark.parametrize("name, contained", [
    ("model.fp32.onnx", True), ("sub/model.onnx", True), ("./model.onnx", True), ("a..b.onnx", True),
    ("../model.onnx", False), ("/abs.onnx", False), ("D:\\x.onnx", False), ("sub\\x.onnx", False),
])
def test_which_names_are_contained(name, contained):
    assert (uncontained(name) is None) is contained


def _with_external_data(target: Path, location: str, data_file: Path) -> None:
    """Rewrite the bundle's fp32 model so its weights live in `data_file`, named `location` inside
    the model; the manifest lists the model's new checksum (and the data file when it is inside)."""
    model = onnx.load(str(target / "model.fp32.onnx"))
    offset = 0
    with open(data_file, "wb") as out:
        for tensor in model.graph.initializer:
            if len(tensor.raw_data) < 1024:
                continue
            out.write(tensor.raw_data)
            external_data_helper.set_external_data(tensor, location, offset, len(tensor.raw_data))
            offset += len(tensor.raw_data)
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
    (target / "model.fp32.onnx").write_bytes(model.SerializeToString())

    def change(data):
        data["models"]["fp32"] = ["model.fp32.onnx"] + ([location] if uncontained(location) is None else [])
        data["files"]["model.fp32.onnx"] = sha256_file(target / "model.fp32.onnx")
        if uncontained(location) is None:
            data["files"][location] = sha256_file(data_file)
    _edit(target, change)


def test_external_data_outside_the_bundle_is_refused_before_loading(copy_bundle, onnxruntime_never_opens):
    target = copy_bundle()
    _with_external_data(target, "../weights.data", target.parent / "weights.data")
    with pytest.raises(BundleError, match=r"external data of model\.fp32\.onnx names the file '\.\./weights\.data'"):
        Embedder(target, precision="fp32")
    assert onnxruntime_never_opens == []


def test_external_data_at_an_absolute_path_is_refused_before_loading(copy_bundle, tmp_path, onnxruntime_never_opens):
    target = copy_bundle()
    data_file = tmp_path / "abs-weights.data"
    _with_external_data(target, str(data_file), data_file)
    with pytest.raises(BundleError, match=r"external data of model\.fp32\.onnx names the file '/.*abs-weights"):
        Embedder(target, precision="fp32")
    assert onnxruntime_never_opens == []


def test_external_data_the_manifest_does_not_list_is_refused(copy_bundle, onnxruntime_never_opens):
    target = copy_bundle()
    _with_external_data(target, "weights.data", target / "weights.data")
    _edit(target, lambda d: d["models"].update(fp32=["model.fp32.onnx"]))
    with pytest.raises(BundleError, match=r"keeps tensors in 'weights\.data', which the manifest does not list"):
        Embedder(target, precision="fp32")
    assert onnxruntime_never_opens == []


def test_listed_external_data_inside_the_bundle_loads_and_gives_the_same_vectors(copy_bundle, bundle):
    target = copy_bundle()
    _with_external_data(target, "weights.data", target / "weights.data")
    assert external_data_locations(target / "model.fp32.onnx") == ["weights.data"] * len(
        [t for t in onnx.load(str(target / "model.fp32.onnx"), load_external_data=False).graph.initializer
         if external_data_helper.uses_external_data(t)])
    got = Embedder(target, precision="fp32").embed(TEXTS)
    expected = Embedder(bundle("nomic-v15-tiny"), precision="fp32").embed(TEXTS)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_the_reader_finds_what_onnx_finds_in_every_bundled_model(bundle):
    for name in ("nomic-v15-tiny", "nomic-v2moe-tiny"):
        for path in sorted(bundle(name).glob("*.onnx")):
            model = onnx.load(str(path), load_external_data=False)
            expected = [entry.value for tensor in external_data_helper._get_all_tensors(model)
                        for entry in tensor.external_data if entry.key == "location"]
            assert external_data_locations(path) == expected


def test_a_bundle_made_of_symlinks_as_in_the_hugging_face_cache_loads(bundle, tmp_path):
    """snapshots/<commit>/<file> -> ../../blobs/<sha256>, as huggingface_hub lays out a download."""
    source = bundle("nomic-v15-tiny")
    blobs = tmp_path / "models--someone--bundle" / "blobs"
    snapshot = tmp_path / "models--someone--bundle" / "snapshots" / ("c0ffee" * 6 + "c0ff")
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file():
            digest = sha256_file(path)
            shutil.copy(path, blobs / digest)
            (snapshot / path.name).symlink_to(Path("..") / ".." / "blobs" / digest)
    assert all((snapshot / name).is_symlink() for name in ("model.int8.onnx", "tokenizer.json", MANIFEST_NAME))
    for precision in ("fp32", "int8"):
        got = Embedder(snapshot, precision=precision).embed(TEXTS)
        np.testing.assert_array_equal(got, Embedder(source, precision=precision).embed(TEXTS))


def test_a_bundle_exported_here_holds_no_absolute_path(checkpoint, tmp_path):
    from export.pipeline import export_bundle

    source = checkpoint("nomic-v15-tiny")
    out = tmp_path / "exported"
    export_bundle(str(source), out)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["source"]["name"] == source.name and "path" not in manifest["source"]
    repo = Path(__file__).resolve().parent.parent  # where the exporting code lives (ONNX node names)
    private = [str(source), str(source.parent), str(tmp_path), str(Path.home()), str(repo), "site-packages"]
    for path in out.iterdir():
        data = path.read_bytes()
        for text in private:
            assert text.encode() not in data, f"{path.name} holds {text}"
    for name in [*manifest["files"], *(n for names in manifest["models"].values() for n in names)]:
        assert uncontained(name) is None
    for path in out.glob("*.onnx"):
        assert all(uncontained(location) is None for location in external_data_locations(path))


def test_a_hub_source_is_recorded_as_its_id_and_revision(tmp_path):
    from export.pipeline import source_record

    snapshot = tmp_path / "hub" / "models--nomic-ai--nomic-embed-text-v1.5" / "snapshots" / ("ab12" * 10)
    snapshot.mkdir(parents=True)
    record = source_record("nomic-ai/nomic-embed-text-v1.5", snapshot, None)
    assert record == {"hub_id": "nomic-ai/nomic-embed-text-v1.5", "revision": "ab12" * 10, "commit": "ab12" * 10}
    assert source_record("nomic-ai/nomic-embed-text-v1.5", snapshot, "main")["revision"] == "main"
    assert source_record(str(snapshot), snapshot, None) == {"name": "ab12" * 10}


def test_a_checkpoint_index_naming_a_shard_outside_is_refused_at_export(checkpoint, tmp_path):
    from export.checkpoint import CheckpointError, load_state_dict

    source = tmp_path / "ckpt"
    shutil.copytree(checkpoint("nomic-v15-tiny"), source)
    (source / "model.safetensors").rename(tmp_path / "model.safetensors")
    (source / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "../model.safetensors"}}))
    with pytest.raises(CheckpointError, match=r"names the shard '\.\./model\.safetensors', which leaves"):
        load_state_dict(source)
