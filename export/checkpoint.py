"""Read a Hugging Face checkpoint directory (or hub id): config.json and safetensors weights.

No remote code is ever run: we only read JSON and tensors. The hub is touched only when
SRC is not an existing directory and looks like a model id.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from edge_embed.errors import EdgeEmbedError
from edge_embed.manifest import uncontained


class CheckpointError(EdgeEmbedError):
    """The checkpoint cannot be read or does not fit the architecture."""


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_FILES = ["*.json", "*.safetensors", "vocab.txt", "1_Pooling/*"]


def resolve_source(src: str, revision: str | None = None) -> Path:
    """A local directory as is; a hub model id is downloaded (safetensors + json only)."""
    path = Path(src)
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{src} is a file; give the checkpoint's directory")
    if not HUB_ID.match(src):
        raise CheckpointError(
            f"{src} is neither a local directory nor a hub model id like 'nomic-ai/nomic-embed-text-v1.5'"
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - export extra installs it
        raise CheckpointError("downloading from the hub needs `pip install huggingface_hub`") from exc
    try:
        return Path(snapshot_download(src, revision=revision, allow_patterns=HUB_FILES))
    except Exception as exc:  # network errors, unknown repo, gated repo
        raise CheckpointError(
            f"could not download {src} from the hub ({exc.__class__.__name__}: {exc}); "
            "download it elsewhere and pass the local directory"
        ) from exc


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} is missing") from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc


def read_config(src: Path) -> dict:
    return read_json(src / "config.json")


def load_state_dict(src: Path) -> dict[str, torch.Tensor]:
    """All tensors of model.safetensors, or of the shards listed in its index."""
    single = src / "model.safetensors"
    index = src / "model.safetensors.index.json"
    if single.exists():
        files = [single]
    elif index.exists():
        shards = sorted(set(read_json(index)["weight_map"].values()))
        for name in shards:  # the bundle's containment rule, for the checkpoint a stranger sent
            problem = uncontained(name)
            if problem:
                raise CheckpointError(f"{index} names the shard {name!r}, {problem}; shards must lie in {src}")
        files = [src / name for name in shards]
    else:
        found = ", ".join(sorted(p.name for p in src.iterdir())) or "nothing"
        raise CheckpointError(
            f"{src} has no model.safetensors (or model.safetensors.index.json); found: {found}. "
            "Convert pytorch_model.bin to safetensors first."
        )
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            tensors.update(load_file(str(file)))
        except Exception as exc:
            raise CheckpointError(f"cannot read {file}: it is truncated or corrupted ({exc}); download or copy "
                                  "it again") from exc
    return tensors


def strip_and_check(
    tensors: dict[str, torch.Tensor],
    expected: dict[str, tuple[int, ...]],
    optional_prefixes: tuple[str, ...] = ("bert.", "model."),
    # pretraining heads (MaskedLM / ForPreTraining checkpoints): Hugging Face's AutoModel drops them too
    ignored: tuple[str, ...] = ("pooler.", "embeddings.position_ids", "cls.", "lm_head.", "mlm."),
) -> dict[str, torch.Tensor]:
    """Map checkpoint keys onto `expected`, failing on any missing, unexpected or misshapen key."""
    renamed: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        for prefix in optional_prefixes:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        if key.startswith(ignored):
            continue
        renamed[key] = value
    missing = sorted(set(expected) - set(renamed))
    unexpected = sorted(set(renamed) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    for key in sorted(set(expected) & set(renamed)):
        if tuple(renamed[key].shape) != tuple(expected[key]):
            problems.append(
                f"{key} has shape {tuple(renamed[key].shape)}, config implies {tuple(expected[key])}"
            )
    if problems:
        hint = ("; no key has the expected names: is this a checkpoint of another architecture, or are its keys "
                "under a prefix other than 'bert.' or 'model.'?") if not set(expected) & set(renamed) else ""
        problems = [p if len(p) < 2000 else p[:2000] + " ..." for p in problems]
        raise CheckpointError("checkpoint keys do not match what its config.json describes: "
                              + "; ".join(problems) + hint)
    tensors = {key: value.float() for key, value in renamed.items()}
    broken = [key for key, value in sorted(tensors.items()) if not torch.isfinite(value).all()]
    if broken:  # they would give NaN embeddings (or a quantizer failure) far from the cause
        raise CheckpointError(f"checkpoint has NaN or infinite values in {', '.join(broken)}; "
                              "the file is damaged or was saved from a diverged run")
    return tensors
