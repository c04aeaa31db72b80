"""The export pipeline on checkpoints of other shapes than the fixtures, and its failure path."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from fixture_recipe import make_weights
from safetensors.numpy import save_file

from edge_embed import Embedder
from edge_embed.errors import BundleError, InputError
from export import validate
from export.checkpoint import CheckpointError
from export.nomic_bert import NomicBertModel, NomicConfig
from export.pipeline import ExportOptions, export_bundle
from export.validate import ValidationError


def reshaped_checkpoint(checkpoint, tmp_path, name: str, **changes) -> tuple:
    """A copy of a fixture with a changed config and fresh recipe weights of matching shapes."""
    target = tmp_path / "ckpt"
    shutil.copytree(checkpoint(name), target)
    config = {**json.loads((target / "config.json").read_text()), **changes}
    (target / "config.json").write_text(json.dumps(config))
    with torch.device("meta"):
        shapes = NomicBertModel(NomicConfig.from_hf(config)).state_dict()
    weights = make_weights(config, [(k, tuple(v.shape)) for k, v in shapes.items()], seed=7)
    save_file(weights, str(target / "model.safetensors"), metadata={"format": "pt"})
    return target, config


@pytest.mark.parametrize("name, changes, dims", [
    ("nomic-v15-tiny", {"n_embd": 96, "n_head": 6, "n_layer": 3, "n_inner": 512}, (8, 96)),
    ("nomic-v15-tiny-longctx", {"n_embd": 48, "n_head": 3, "max_trained_positions": 24}, (4, 48)),
    ("nomic-v2moe-tiny", {"n_embd": 48, "n_head": 3, "n_layer": 6, "num_experts": 4, "n_inner": 96}, (16, 48)),
])
def test_other_shapes_export_and_validate(checkpoint, tmp_path, name, changes, dims):
    source, _ = reshaped_checkpoint(checkpoint, tmp_path, name, **changes)
    report = export_bundle(str(source), tmp_path / "bundle")
    assert report["precisions"]["fp32"]["max_abs"] < 1e-5
    assert report["precisions"]["int8"]["min_cosine"] > 0.98
    model = Embedder(tmp_path / "bundle")
    assert model.dims == dims
    assert model.embed(["a text", "another, longer text"], task="clustering").shape == (2, dims[1])


def test_failed_validation_writes_no_bundle(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(validate, "FP32_MAX_ABS", 0.0)  # any rounding at all now counts as drift
    out = tmp_path / "bundle"
    with pytest.raises(ValidationError, match="validation failed, no bundle written: fp32 max-abs"):
        export_bundle(str(checkpoint("nomic-v15-tiny")), out, ExportOptions(int8=False))
    assert not out.exists()  # created for the export, removed when it failed


def test_rotary_scaling_factor_option_is_recorded(checkpoint, tmp_path):
    out = tmp_path / "bundle"
    export_bundle(str(checkpoint("nomic-v15-tiny")), out, ExportOptions(int8=False, rotary_scaling_factor=2.0))
    manifest = json.loads((out / "edge_embed.json").read_text())
    assert manifest["rotary"]["scaling_factor"] == 2.0 and manifest["rotary"]["base"] == 1000


def test_fp16_bundle_keeps_rotary_and_routing_in_fp32(checkpoint, tmp_path):
    import numpy as np
    import onnx

    out = tmp_path / "bundle"
    report = export_bundle(str(checkpoint("nomic-v2moe-tiny")), out, ExportOptions(int8=False, fp16=True))
    assert report["precisions"]["fp16"]["min_cosine"] > 0.999
    graph = onnx.load(str(out / "model.fp16.onnx")).graph
    half = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    assert half, "the expert and attention weights should be fp16"
    for node in graph.node:
        if node.op_type in ("Cos", "Sin", "TopK") or "router" in node.name:
            assert not set(node.input) & half, f"{node.name} must compute in fp32"
    texts = ["hola mundo", "a longer English sentence to embed"]
    fp16 = Embedder(out, precision="fp16", providers="cpu").embed(texts)
    fp32 = Embedder(out, precision="fp32").embed(texts)
    assert (fp16 * fp32).sum(axis=1).min() > 0.999
    assert np.abs(fp16 - fp32).max() > 0  # it really is a different model


def test_large_models_keep_weights_in_external_data(checkpoint, tmp_path, monkeypatch):
    from export import onnx_export

    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 1 << 20)  # the 8 MB tiny model counts as large
    out = tmp_path / "bundle"
    export_bundle(str(checkpoint("nomic-v15-tiny")), out, ExportOptions(int8=False))
    manifest = json.loads((out / "edge_embed.json").read_text())
    assert manifest["models"]["fp32"] == ["model.fp32.onnx", "model.fp32.onnx.data"]
    assert (out / "model.fp32.onnx").stat().st_size < 1 << 20
    assert "model.fp32.onnx.data" in manifest["files"]
    mode = (out / "model.fp32.onnx").stat().st_mode & 0o777
    assert (out / "model.fp32.onnx.data").stat().st_mode & 0o777 == mode  # onnx writes it 0600
    assert Embedder(out, precision="fp32").embed(["external data"]).shape == (1, 64)
    (out / "model.fp32.onnx.data").write_bytes(b"broken")
    with pytest.raises(BundleError, match="checksum mismatch for .*model.fp32.onnx.data"):
        Embedder(out, precision="fp32")


def test_a_model_this_onnxruntime_cannot_run_is_written_and_reported_not_validated(checkpoint, tmp_path,
                                                                                   monkeypatch):
    import subprocess
    import sys

    import onnxruntime as ort

    monkeypatch.setattr(ort, "__version__", "1.27.0")  # older than fused int8 MoE needs
    out = tmp_path / "fused"
    report = export_bundle(str(checkpoint("nomic-v2moe-tiny")), out, ExportOptions(moe="fused"))
    assert "max_abs" in report["precisions"]["fp32"] and "failed" not in report
    assert "needs onnxruntime >= 1.28.0" in report["precisions"]["int8"]["not_validated"]
    info = subprocess.run([sys.executable, "-m", "edge_embed.cli", "info", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, info.stderr
    assert "validation   int8: not validated at export: this bundle's int8 model needs onnxruntime >= 1.28.0" \
        in info.stdout


@pytest.mark.parametrize("options, message", [
    (ExportOptions(min_dim=100), "min dim must be from 1 to the model's width 64, not 100"),
    (ExportOptions(min_dim=0), "min dim must be from 1"),
    (ExportOptions(max_length=0), "max length must be at least 8"),
    (ExportOptions(rotary_scaling_factor=-1.0), "rotary scaling factor must be positive"),
    (ExportOptions(rotary_scaling_factor=2.0, rotary_scaling_default=False), "a rotary scaling factor or no rotary"),
    (ExportOptions(moe="dense-ish"), "moe must be one of"),
    (ExportOptions(moe="fused"), "applies to MoE checkpoints .v2-moe. only; this is a nomic-embed-text-v1.5"),
    (ExportOptions(int8_scheme="int4"), "int8_scheme must be one of"),
])
def test_options_a_bundle_could_never_use_are_refused_before_any_work(checkpoint, tmp_path, options, message):
    out = tmp_path / "bundle"
    with pytest.raises(InputError, match=message):
        export_bundle(str(checkpoint("nomic-v15-tiny")), out, options)
    assert not out.exists()


def test_non_finite_weights_are_named(checkpoint, tmp_path):
    from safetensors.numpy import load_file

    target = tmp_path / "ckpt"
    shutil.copytree(checkpoint("nomic-v15-tiny"), target)
    tensors = load_file(str(target / "model.safetensors"))
    tensors["encoder.layers.1.attn.out_proj.weight"][0, 3] = float("nan")
    save_file(tensors, str(target / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"NaN or infinite values in encoder.layers.1.attn.out_proj.weight"):
        export_bundle(str(target), tmp_path / "bundle")


def test_nan_figures_fail_validation():
    good = {"max_abs": 2e-7, "min_cosine": 1.0}
    assert validate.verdict({"fp32": good, "int8": {"max_abs": 0.02, "min_cosine": 0.999}}) is None
    assert validate.verdict({"fp32": {"max_abs": float("nan"), "min_cosine": float("nan")}}) \
        == "fp32 gave NaN or infinite embeddings"
    assert validate.verdict({"fp32": good, "int8": {"max_abs": float("nan"), "min_cosine": 0.5}}) \
        == "int8 gave NaN or infinite embeddings"
    assert "fp32 max-abs 0.01" in validate.verdict({"fp32": {"max_abs": 0.01, "min_cosine": 0.99}})


def test_a_model_that_overflows_writes_no_bundle(checkpoint, tmp_path):
    """Finite weights, infinite activations: the runtime refuses the NaN states and the export stops."""
    from safetensors.numpy import load_file

    target = tmp_path / "ckpt"
    shutil.copytree(checkpoint("nomic-v15-tiny"), target)
    tensors = load_file(str(target / "model.safetensors"))
    tensors["emb_ln.weight"][:] = 3e38  # finite, but the first projections overflow to inf
    save_file(tensors, str(target / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "bundle"
    with pytest.raises(ValidationError, match="no bundle written: fp32 gave NaN or infinite embeddings"):
        export_bundle(str(target), out, ExportOptions(int8=False))
    assert not out.exists()  # created for the export, removed when it failed


def _variant(checkpoint, tmp_path, name="nomic-v15-tiny"):
    target = tmp_path / "ckpt"
    shutil.copytree(checkpoint(name), target)
    return target


@pytest.mark.parametrize("pooling, message", [
    ({"pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": True}, "pools with pooling_mode_max_tokens"),
    ({"pooling_mode_cls_token": True}, "pools with pooling_mode_cls_token, pooling_mode_mean_tokens"),
    ({"include_prompt": False}, "leaves the prompt out of the mean"),
])
def test_sentence_transformers_pooling_other_than_mean_or_cls_is_refused(checkpoint, tmp_path, pooling, message):
    source = _variant(checkpoint, tmp_path)
    path = source / "1_Pooling" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **pooling}))
    with pytest.raises(CheckpointError, match=message):
        export_bundle(str(source), tmp_path / "bundle")


def test_a_dense_module_is_refused(checkpoint, tmp_path):
    source = _variant(checkpoint, tmp_path)
    modules = json.loads((source / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (source / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(CheckpointError, match=r"adds a sentence_transformers.models.Dense module \(2_Dense/\)"):
        export_bundle(str(source), tmp_path / "bundle")


def test_a_tokenizer_bigger_than_the_embedding_table_is_refused(checkpoint, tmp_path):
    source = _variant(checkpoint, tmp_path)
    shutil.copy(checkpoint("nomic-v2moe-tiny") / "tokenizer.json", source / "tokenizer.json")  # 250k pieces
    with pytest.raises(CheckpointError, match=r"tokenizer.json has \d+ tokens but the model's embedding table has "
                                              r"30528 rows"):
        export_bundle(str(source), tmp_path / "bundle")


def test_pretraining_heads_and_a_model_prefix_are_tolerated(checkpoint, tmp_path):
    from safetensors.numpy import load_file

    source = _variant(checkpoint, tmp_path)
    tensors = {f"model.{k}": v for k, v in load_file(str(source / "model.safetensors")).items()}
    tensors["cls.predictions.bias"] = tensors["model.emb_ln.bias"][:8].copy()
    save_file(tensors, str(source / "model.safetensors"), metadata={"format": "pt"})
    report = export_bundle(str(source), tmp_path / "bundle", ExportOptions(int8=False))
    assert report["precisions"]["fp32"]["max_abs"] < 1e-5


def test_output_path_problems_are_found_before_the_weights_load(checkpoint, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file; name a directory"):
        export_bundle(str(checkpoint("nomic-v15-tiny")), tmp_path / "file")
    with pytest.raises(InputError, match="cannot create the bundle directory"):
        export_bundle(str(checkpoint("nomic-v15-tiny")), tmp_path / "file" / "sub")


def test_reexport_replaces_the_earlier_bundle_and_nothing_else(checkpoint, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "bundle"
    export_bundle(str(checkpoint("nomic-v15-tiny")), out, ExportOptions(fp16=True))
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = f".edge-embed-staging-{finished.stdout.strip()}-x1"  # left by an export that died
    running = f".edge-embed-staging-{os.getpid()}-x2"  # another export into the same directory, still going
    users = ["model.quantized.onnx", "notes.txt"]  # the user's own files
    for name in (killed, running):
        (out / name).mkdir()
    for name in users:
        (out / name).write_text("mine")
    export_bundle(str(checkpoint("nomic-v2moe-tiny")), out, ExportOptions(int8=False))
    assert sorted(p.name for p in out.iterdir()) == sorted([running, "edge_embed.json", "model.fp32.onnx",
                                                            "tokenizer.json", "tokenizer.unigram.json",
                                                            "validation.json", *users])
    assert Embedder(out).manifest.family == "nomic-embed-text-v2-moe"


def test_v15_gets_dynamic_ntk_factor_2_by_default_with_an_opt_out(bundle, checkpoint, tmp_path):
    """A v1.5-style config (trained at 2048 positions, no rotary scaling) is exported with the model
    card's long-context setting; the flag leaves it out. At or below 2048 tokens nothing changes."""
    from export.cli import main as export_main

    default = bundle("nomic-v15-tiny")
    rotary = json.loads((default / "edge_embed.json").read_text())["rotary"]
    assert rotary["scaling_factor"] == 2.0 and "v1.5 default" in rotary["scaling_source"]
    validated = json.loads((default / "validation.json").read_text())
    assert validated["texts"] == len(validate.TEXTS) + 1  # torch vs ONNX also checked on a text past 2048 tokens
    plain = tmp_path / "plain"
    argv = [str(checkpoint("nomic-v15-tiny")), "--out", str(plain), "--no-rotary-scaling", "--no-int8", "--no-validate"]
    assert export_main(argv) == 0
    rotary = json.loads((plain / "edge_embed.json").read_text())["rotary"]
    assert rotary["scaling_factor"] is None and rotary["scaling_source"].startswith("none")
    scaled, unscaled = Embedder(default, precision="fp32"), Embedder(plain, precision="fp32")
    words = [f"word{i % 89}" for i in range(1200)]  # about 2.2 tokens a word
    at_limit, past = " ".join(words[:900]), " ".join(words)
    lengths = [len(seq) for seq in scaled.tokenizer.encode([at_limit, past]).sequences]
    assert lengths[0] <= 2048 < lengths[1]
    assert np.abs(scaled.embed([at_limit]) - unscaled.embed([at_limit])).max() <= 1e-6
    assert np.abs(scaled.embed([past]) - unscaled.embed([past])).max() > 1e-3
