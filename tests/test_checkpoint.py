"""Checkpoints load strictly: missing, unexpected or misshapen keys are errors naming the keys."""
from __future__ import annotations

import json
import shutil

import pytest
from safetensors.numpy import load_file, save_file

from export.checkpoint import CheckpointError, load_state_dict, read_config, resolve_source
from export.nomic_bert import NomicConfig, build_nomic

NAME = "nomic-v15-tiny"


@pytest.fixture
def editable(checkpoint, tmp_path):
    """A private copy of the tiny v1.5 checkpoint and its tensors as numpy arrays."""
    target = tmp_path / "ckpt"
    shutil.copytree(checkpoint(NAME), target)
    return target, load_file(str(target / "model.safetensors"))


def build(path):
    return build_nomic(read_config(path), load_state_dict(path))


def test_missing_key_is_named(editable):
    path, tensors = editable
    del tensors["encoder.layers.1.mlp.fc12.weight"]
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys: encoder.layers.1.mlp.fc12.weight"):
        build(path)


def test_unexpected_key_is_named(editable):
    path, tensors = editable
    tensors["encoder.layers.0.mlp.fc3.weight"] = tensors["encoder.layers.0.mlp.fc2.weight"]
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected keys: encoder.layers.0.mlp.fc3.weight"):
        build(path)


def test_wrong_shape_is_named(editable):
    path, tensors = editable
    tensors["emb_ln.weight"] = tensors["emb_ln.weight"][:10].copy()
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"emb_ln.weight has shape \(10,\), config implies \(64,\)"):
        build(path)


def test_bert_prefix_and_pooler_are_tolerated(editable):
    path, tensors = editable
    renamed = {f"bert.{k}": v for k, v in tensors.items()}
    renamed["bert.pooler.dense.weight"] = tensors["emb_ln.weight"]
    save_file(renamed, str(path / "model.safetensors"))
    build(path)


def test_sharded_checkpoint(editable):
    path, tensors = editable
    keys = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": keys[:10], "model-00002-of-00002.safetensors": keys[10:]}
    for shard, names in halves.items():
        save_file({k: tensors[k] for k in names}, str(path / shard))
    (path / "model.safetensors").unlink()
    index = {"weight_map": {k: shard for shard, names in halves.items() for k in names}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert len(load_state_dict(path)) == len(tensors)
    build(path)


def test_no_weights_file(editable):
    path, _ = editable
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        load_state_dict(path)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("prenorm", True, "prenorm=True"),
        ("use_rms_norm", True, "use_rms_norm"),
        ("rotary_emb_scale_base", 512, "rotary_emb_scale_base"),
        ("ffn_div", 2, "ffn_div"),
        ("rotary_emb_fraction", 0.5, "rotary_emb_fraction"),
    ],
)
def test_unsupported_config_is_refused(editable, key, value, message):
    path, _ = editable
    config = json.loads((path / "config.json").read_text())
    config[key] = value
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        build(path)


def test_source_that_is_neither_directory_nor_hub_id(tmp_path):
    with pytest.raises(CheckpointError, match="neither a local directory nor a hub model id"):
        resolve_source(str(tmp_path / "missing" / "deep" / "path"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        resolve_source(str(tmp_path / "file.txt"))


def test_hub_id_without_network_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="could not download nomic-ai/nomic-embed-text-v1.5"):
        resolve_source("nomic-ai/nomic-embed-text-v1.5")


def test_export_cli_reports_a_bad_checkpoint(editable, tmp_path, capsys):
    from export.cli import main

    path, tensors = editable
    del tensors["emb_ln.bias"]
    save_file(tensors, str(path / "model.safetensors"))
    assert main([str(path), "--out", str(tmp_path / "out")]) == 1
    assert "missing keys: emb_ln.bias" in capsys.readouterr().err


def test_rotary_base_from_a_native_transformers_config(editable):
    """A config that names the base only as rope_parameters.rope_theta builds the same model."""
    path, _ = editable
    config = json.loads((path / "config.json").read_text())
    expected = NomicConfig.from_hf(config).rotary_base
    config.pop("rotary_emb_base", None)
    config["rope_parameters"] = {"rope_theta": expected, "rope_type": "default"}
    assert NomicConfig.from_hf(config).rotary_base == expected
    config["rope_parameters"]["rope_theta"] = 500.0
    assert NomicConfig.from_hf(config).rotary_base == 500.0


def test_a_decoder_bert_is_refused():
    from export.bert import BertConfig

    config = {"hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 64,
              "vocab_size": 100, "max_position_embeddings": 64}
    assert BertConfig.from_hf(config).hidden_size == 32
    with pytest.raises(CheckpointError, match="makes this BERT a decoder"):
        BertConfig.from_hf({**config, "is_decoder": True})
