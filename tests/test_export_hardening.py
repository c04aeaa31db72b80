"""Export against what strangers send and what users do: configs that would need more memory than
there is, truncated or corrupted weights, two exports to one --out at once, and the int8 gate."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_embed import Embedder, InputError
from edge_embed.manifest import MANIFEST_NAME, read_manifest, verify_files
from export.bundle_dir import STAGING_PREFIX, install_lock
from export.checkpoint import CheckpointError
from export.memory_check import check_fits, parameter_count
from export.pipeline import ExportOptions, export_bundle
from export.validate import ValidationError, st_verdict

REPO = Path(__file__).resolve().parent.parent
V15 = "nomic-v15-tiny"


def _copy(checkpoint, tmp_path, name=V15) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(checkpoint(name), target)
    return target


def _edit_config(source: Path, **changes) -> None:
    path = source / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_a_config_too_big_for_this_machine_fails_before_reading_weights_naming_the_fields(checkpoint, tmp_path):
    source = _copy(checkpoint, tmp_path)
    _edit_config(source, vocab_size=10**12)
    (source / "model.safetensors").unlink()  # it is never reached
    with pytest.raises(CheckpointError, match=r"vocab_size=1000000000000, n_embd=64.*GiB of memory"):
        export_bundle(str(source), tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_the_memory_estimate_counts_the_real_v15_size():
    v15 = {"model_type": "nomic_bert", "vocab_size": 30528, "n_embd": 768, "n_layer": 12, "n_inner": 3072}
    assert 130e6 < parameter_count(v15) < 140e6  # nomic-embed-text-v1.5 has 137M parameters
    check_fits(v15, available=8 << 30)
    with pytest.raises(CheckpointError, match="n_layer=12"):
        check_fits(v15, available=1 << 30)
    bert = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
            "intermediate_size": 1536, "max_position_embeddings": 512}
    assert 22e6 < parameter_count(bert) < 23e6  # all-MiniLM-L6-v2: 22.7M


def test_the_memory_estimate_counts_the_real_v2_moe_size():
    # nomic-embed-text-v2-moe: GELU MLPs (two matrices), 8 experts on every other layer, 475M parameters
    v2 = {"model_type": "nomic_bert", "vocab_size": 250048, "n_embd": 768, "n_layer": 12, "n_inner": 3072,
          "num_experts": 8, "moe_every_n_layers": 2, "activation_function": "gelu"}
    assert 465e6 < parameter_count(v2) < 485e6
    check_fits(v2, available=14 << 30)  # its export peaked at 12.2 GB
    with pytest.raises(CheckpointError, match="num_experts=8"):
        check_fits(v2, available=12 << 30)


@pytest.mark.parametrize("value", ["768", -1, 1.5, True, 10**40])
def test_a_size_that_is_not_a_size_is_refused(checkpoint, tmp_path, value):
    source = _copy(checkpoint, tmp_path)
    _edit_config(source, n_embd=value)
    with pytest.raises(CheckpointError, match="config.json: n_embd is"):
        export_bundle(str(source), tmp_path / "bundle")


@pytest.mark.parametrize("damage", ["truncate", "header", "empty"])
def test_truncated_or_corrupted_safetensors_fail_naming_the_file(checkpoint, tmp_path, damage):
    source = _copy(checkpoint, tmp_path)
    path = source / "model.safetensors"
    data = path.read_bytes()
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "header":
        data = data[:8] + b"\xff" * 16 + data[24:]
    else:
        data = b""
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=rf"cannot read {path}: it is truncated or corrupted"):
        export_bundle(str(source), tmp_path / "bundle")


def _export_process(source: Path, out: Path, *options: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "export", str(source), "--out", str(out), *options],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _whole_bundle(out: Path) -> dict:
    """The bundle in `out` is one export's, whole: every file its manifest lists has its checksum."""
    manifest = read_manifest(out)
    verify_files(out, manifest, list(manifest.files))
    report = json.loads((out / "validation.json").read_text())
    omitted = {"int8", "int8_static"} if "int8_omitted" in report else set()  # its figures stay, to say why
    omitted |= {"int8_static"} if "int8_static_omitted" in report else set()
    assert sorted(set(report["precisions"]) - omitted) == sorted(manifest.models)  # the report is this bundle's
    assert not list(out.glob(STAGING_PREFIX + "*"))
    return json.loads((out / MANIFEST_NAME).read_text())


@pytest.mark.slow
def test_two_exports_to_one_out_at_once_leave_one_whole_bundle(checkpoint, tmp_path):
    source = checkpoint(V15)
    out = tmp_path / "bundle"
    first = _export_process(source, out, "--no-int8", "--min-dim", "8")
    second = _export_process(source, out, "--min-dim", "16")
    for process in (first, second):
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output
    manifest = _whole_bundle(out)
    expected = {8: ["fp32"], 16: ["fp32", "int8"]}[manifest["matryoshka"]["min_dim"]]
    assert sorted(manifest["models"]) == expected
    Embedder(out, precision="fp32").embed(["one whole bundle"])


@pytest.mark.slow
def test_an_export_waits_for_the_one_installing_into_the_same_out(checkpoint, tmp_path):
    source = checkpoint(V15)
    out = tmp_path / "bundle"
    out.mkdir()
    with install_lock(out):  # as if another export were moving its files in
        process = _export_process(source, out, "--no-int8")
        deadline = time.monotonic() + 300
        while not list(out.glob(STAGING_PREFIX + "*/validation.json")):  # staged, validated: about to install
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(2)
        assert process.poll() is None and not (out / MANIFEST_NAME).exists()
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    _whole_bundle(out)


def test_int8_below_the_gate_refuses_to_finish(checkpoint, tmp_path):
    with pytest.raises(ValidationError, match=r"int8's min cosine to fp32 is 0\.9\d+, below the 0\.99999 required"):
        export_bundle(str(checkpoint(V15)), tmp_path / "bundle", ExportOptions(int8_min_cosine=0.99999))
    assert not (tmp_path / "bundle").exists()


def test_int8_below_the_gate_can_be_left_out_loudly(checkpoint, tmp_path, capsys):
    from export.cli import main

    out = tmp_path / "bundle"
    assert main([str(checkpoint(V15)), "--out", str(out), "--int8-min-cosine", "0.99999",
                 "--int8-on-failure", "omit"]) == 0
    assert "WARNING: THE BUNDLE HAS NO INT8 MODEL" in capsys.readouterr().err
    manifest = _whole_bundle(out)
    assert sorted(manifest["models"]) == ["fp32"] and not (out / "model.int8.onnx").exists()
    assert "below the 0.99999 required" in json.loads((out / "validation.json").read_text())["int8_omitted"]
    with pytest.raises(InputError, match=r"this bundle has no int8 model"):
        Embedder(out, precision="int8")


def test_the_default_gate_is_098_and_the_option_is_checked(checkpoint, tmp_path):
    assert ExportOptions().int8_min_cosine == 0.98
    with pytest.raises(InputError, match="int8 min cosine must be from 0 to 1"):
        export_bundle(str(checkpoint(V15)), tmp_path / "bundle", ExportOptions(int8_min_cosine=1.5))


def test_a_sentence_transformers_mismatch_fails_validation():
    assert st_verdict({"skipped": "not installed"}) is None
    assert st_verdict({"min_cosine": 0.99999, "max_abs": 1e-5, "version": "5"}) is None
    assert "differs from sentence-transformers" in st_verdict({"min_cosine": 0.97, "max_abs": 0.2, "version": "5"})


def test_an_int8_model_that_cannot_be_loaded_fails_the_export(checkpoint, tmp_path, monkeypatch):
    """Only a model written for a newer onnxruntime (the manifest's requires_onnxruntime) may go unvalidated;
    one the exporter wrote wrong is an error, and nothing is installed."""
    from export import pipeline

    def broken(fp32_path, int8_path, scheme="dynamic"):  # a readable ONNX file onnxruntime refuses
        import onnx
        from onnx import TensorProto, helper

        node = helper.make_node("NoSuchOperator", ["input_ids"], ["last_hidden_state"])
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, None)],
                                  [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, None)])
        onnx.save(helper.make_model(graph), str(int8_path))
        return [int8_path.name]

    monkeypatch.setattr(pipeline, "quantize_int8", broken)
    with pytest.raises(ValidationError, match="int8 model written cannot be loaded"):
        export_bundle(str(checkpoint("nomic-v15-tiny")), tmp_path / "b", ExportOptions(int8_scheme="dynamic"))
    assert not (tmp_path / "b" / MANIFEST_NAME).exists()
