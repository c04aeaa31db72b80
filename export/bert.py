"""A standard BERT encoder (model_type "bert", e.g. all-MiniLM-L6-v2) in plain PyTorch.

Post-norm blocks with learned absolute positions and exact-erf GELU, the Hugging Face
`BertModel` key names (with an optional `bert.` prefix; `pooler.*` is ignored).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from export.checkpoint import CheckpointError, strip_and_check
from export.nomic_bert import attention_bias


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_heads: int
    num_layers: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def from_hf(cls, cfg: dict) -> BertConfig:
        if cfg.get("hidden_act", "gelu") != "gelu":
            raise CheckpointError(f"hidden_act {cfg['hidden_act']!r} is not supported (gelu only)")
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise CheckpointError("only absolute position embeddings are supported")
        if cfg.get("is_decoder") or cfg.get("add_cross_attention"):
            raise CheckpointError("config.json makes this BERT a decoder (is_decoder / add_cross_attention); "
                                  "edge-embed exports bidirectional encoders only")
        return cls(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            num_heads=cfg["num_attention_heads"],
            num_layers=cfg["num_hidden_layers"],
            intermediate_size=cfg["intermediate_size"],
            max_position_embeddings=cfg["max_position_embeddings"],
            type_vocab_size=cfg.get("type_vocab_size", 2),
            layer_norm_eps=cfg.get("layer_norm_eps", 1e-12),
        )


class Embeddings(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids):
        positions = self.position_embeddings.weight[: input_ids.shape[1]]
        x = self.word_embeddings(input_ids) + positions + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x, mask_bias):
        b, s, h = x.shape
        d = h // self.num_heads

        def heads(t):
            return t.view(b, s, self.num_heads, d).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + mask_bias
        return (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, s, h)


class DenseLayerNorm(nn.Module):
    """BertSelfOutput / BertOutput: LayerNorm(dense(x) + residual)."""

    def __init__(self, d_in: int, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(d_in, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class AttentionBlock(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.self = SelfAttention(cfg)
        self.output = DenseLayerNorm(cfg.hidden_size, cfg)


class Intermediate(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)


class Layer(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.attention = AttentionBlock(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = DenseLayerNorm(cfg.intermediate_size, cfg)

    def forward(self, x, mask_bias):
        h = self.attention.output(self.attention.self(x, mask_bias), x)
        return self.output(F.gelu(self.intermediate.dense(h)), h)


class Encoder(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_layers))


class BertModel(nn.Module):
    """input_ids, attention_mask [B, S] int64 -> last_hidden_state [B, S, hidden] float32."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids)
        mask_bias = attention_bias(attention_mask)
        for layer in self.encoder.layer:
            x = layer(x, mask_bias)
        return x


def build_bert(config: dict, tensors: dict[str, torch.Tensor]) -> BertModel:
    model = BertModel(BertConfig.from_hf(config))
    expected = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    model.load_state_dict(strip_and_check(tensors, expected), strict=True)
    return model.eval()
