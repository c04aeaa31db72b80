"""What differs between model families, declared as data: builder, prefixes, Matryoshka range."""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from export.checkpoint import CheckpointError

NOMIC_PREFIXES = {
    "search_query": "search_query: ",
    "search_document": "search_document: ",
    "clustering": "clustering: ",
    "classification": "classification: ",
}
# sentence-transformers prompt names (v2-moe's config_sentence_transformers.json) -> our tasks
PROMPT_NAMES = {
    "query": "search_query",
    "passage": "search_document",
    "Clustering": "clustering",
    "Classification": "classification",
}


@dataclass(frozen=True)
class Family:
    name: str
    min_dim_divisor: int  # smallest Matryoshka dim = ceil(hidden / divisor)
    layer_norm: bool  # v1.5's layer_norm before truncation
    build: Callable[[dict, dict, str], torch.nn.Module]


def _build_nomic(config, tensors, moe_mode):
    from export.nomic_bert import build_nomic

    return build_nomic(config, tensors, moe_mode)


def _build_bert(config, tensors, moe_mode):
    from export.bert import build_bert

    return build_bert(config, tensors)


V15 = Family("nomic-embed-text-v1.5", 12, True, _build_nomic)
V2_MOE = Family("nomic-embed-text-v2-moe", 3, False, _build_nomic)
BERT = Family("bert", 12, False, _build_bert)


V15_TRAINED_POSITIONS = 2048
V15_DEFAULT_ROTARY_SCALING = 2.0  # the v1.5 model card's long-context setting (dynamic NTK)


def default_rotary_scaling(family: Family, config: dict) -> float | None:
    """v1.5 was trained at 2,048 positions and its config sets no rotary scaling, so an export as
    configured would run 2,049-8,192-token texts with unscaled rotary positions, silently. The
    model card's setting (dynamic NTK, factor 2) changes nothing at or below 2,048 tokens, so it is
    the default for a v1.5-style checkpoint; a config that sets its own factor keeps it."""
    trained = config.get("max_trained_positions")
    if (family is V15 and config.get("rotary_scaling_factor") is None and trained == V15_TRAINED_POSITIONS
            and (config.get("n_positions") or 0) > trained):
        return V15_DEFAULT_ROTARY_SCALING
    return None


def detect_family(config: dict) -> Family:
    model_type = config.get("model_type")
    if model_type == "nomic_bert":
        return V2_MOE if config.get("num_experts") else V15
    if model_type == "bert":
        return BERT
    raise CheckpointError(
        f"model_type {model_type!r} is not supported; edge-embed exports nomic_bert "
        "(nomic-embed-text-v1.5, v2-moe) and bert encoders"
    )


def hidden_size(config: dict) -> int:
    return config.get("n_embd") or config["hidden_size"]


def min_dim(family: Family, config: dict) -> int:
    return math.ceil(hidden_size(config) / family.min_dim_divisor)


def _optional_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}  # the ones bundles run


def pooling(src: Path) -> str:
    """The bundle's pooling from the sentence-transformers pipeline: "mean" (the Nomic models', and
    the default without one) or "cls" (e.g. BGE). A pipeline that does anything else (max pooling,
    a Dense projection, prompt tokens left out of the mean) would give vectors unlike the model's,
    so it is refused, not exported."""
    found = "mean"
    modules = _optional_json(src / "modules.json")
    for module in modules if isinstance(modules, list) else []:
        kind = str(module.get("type", ""))
        name = kind.rsplit(".", 1)[-1]
        if name not in ("Transformer", "Pooling", "Normalize"):
            raise CheckpointError(f"modules.json adds a {kind} module ({module.get('path')}/); edge-embed bundles "
                                  "compute transformer -> mean or CLS pooling -> normalize only, so they would not "
                                  "give this model's vectors")
        if name == "Pooling":
            config = _optional_json(src / str(module.get("path", "")) / "config.json")
            modes = sorted(key for key, on in config.items() if key.startswith("pooling_mode_") and on)
            if len(modes) > 1 or (modes and modes[0] not in POOLING_MODES):
                raise CheckpointError(f"{module.get('path')}/config.json pools with {', '.join(modes)}; edge-embed "
                                      "bundles pool with the mean or the CLS token only, so they would not give "
                                      "this model's vectors")
            if config.get("include_prompt") is False:
                raise CheckpointError(f"{module.get('path')}/config.json leaves the prompt out of the mean "
                                      "(include_prompt false); edge-embed bundles pool every token")
            found = POOLING_MODES[modes[0]] if modes else found
    return found


def prefixes(family: Family, src: Path) -> dict[str, str]:
    """Task -> prefix. Nomic: the model card's four; plain models: the tasks exist, no prefix."""
    if family is BERT:
        return {task: "" for task in NOMIC_PREFIXES}
    found = dict(NOMIC_PREFIXES)
    prompts = _optional_json(src / "config_sentence_transformers.json").get("prompts") or {}
    for prompt, task in PROMPT_NAMES.items():
        if prompt in prompts:
            found[task] = prompts[prompt]
    return found


def max_length(config: dict, src: Path) -> int:
    """sentence-transformers' max_seq_length, else the tokenizer's model_max_length, else
    the position limit of the config."""
    st = _optional_json(src / "sentence_bert_config.json").get("max_seq_length")
    tok = _optional_json(src / "tokenizer_config.json").get("model_max_length")
    positions = config.get("max_position_embeddings") if config.get("model_type") == "bert" else None
    for value in (st, tok if tok and tok < 1_000_000 else None, positions, config.get("n_positions")):
        if value:
            return min(int(value), positions) if positions else int(value)
    raise CheckpointError("cannot tell the max sequence length; pass --max-length")
