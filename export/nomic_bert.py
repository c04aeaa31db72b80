"""NomicBERT (nomic-embed-text-v1.5 and nomic-embed-text-v2-moe) in plain PyTorch.

Read it next to docs/architecture.md ("The forward pass"): every step here is one line of
the upstream forward. Module and parameter names equal the checkpoint keys, so the real
`model.safetensors` loads with `load_state_dict(strict=True)` and no renaming.

Differences from the upstream code, on purpose:
- rotary tables are computed from the attention mask on every call (no cached module state);
- with dynamic NTK scaling, the scaled base follows each text's own length, not the padded
  batch length, so a text's embedding does not depend on its batch-mates;
- the MoE layer routes only real (non-padding) tokens, in one of three graph forms (sparse,
  dense, fused) that compute the same function.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from export import MOE_MODES
from export.checkpoint import CheckpointError


@dataclass(frozen=True)
class NomicConfig:
    vocab_size: int
    n_embd: int
    n_head: int
    n_layer: int
    n_inner: int
    type_vocab_size: int
    layer_norm_epsilon: float
    activation: str  # "swiglu" (v1.5) or "gelu" (v2)
    qkv_bias: bool
    fc1_bias: bool
    fc2_bias: bool
    rotary_base: float
    rotary_scaling_factor: float | None
    max_trained_positions: int
    moe_every_n_layers: int  # 0: no MoE
    num_experts: int
    moe_top_k: int
    pad_token_id: int

    @classmethod
    def from_hf(cls, cfg: dict) -> NomicConfig:
        unsupported = {
            "prenorm": True,
            "causal": True,
            "parallel_block": True,
            "rotary_emb_interleaved": True,
            "moe_normalize_expert_weights": True,
            "expert_choice_router": True,
        }
        for key, bad in unsupported.items():
            if cfg.get(key) == bad:
                raise CheckpointError(f"config.json sets {key}={bad}, which no Nomic Embed model uses")
        if cfg.get("rotary_emb_fraction", 1.0) != 1.0:
            raise CheckpointError("only rotary_emb_fraction 1.0 is supported (both Nomic models use it)")
        if cfg.get("use_rms_norm"):
            raise CheckpointError("config.json sets use_rms_norm, which no Nomic Embed model uses (LayerNorm)")
        if cfg.get("rotary_emb_scale_base") is not None:
            raise CheckpointError("config.json sets rotary_emb_scale_base (XPos), which no Nomic Embed model uses")
        if (cfg.get("ffn_div") or 1) != 1:
            raise CheckpointError("only ffn_div 1 is supported (Nomic v2-moe uses it)")
        if cfg.get("num_shared_experts", 0):
            raise CheckpointError("shared experts are not supported (Nomic v2-moe has none)")
        multiple = cfg.get("pad_vocab_size_multiple", 1) or 1
        vocab = math.ceil(cfg["vocab_size"] / multiple) * multiple
        activation = cfg.get("activation_function", "swiglu")
        if activation not in ("swiglu", "gelu"):
            raise CheckpointError(f"activation_function {activation!r} is not supported (swiglu or gelu)")
        n_inner = cfg.get("n_inner") or 4 * cfg["n_embd"]
        if activation == "swiglu":
            n_inner = math.ceil(n_inner / 256) * 256  # upstream gated MLP rounds to a multiple of 256
        moe_every = cfg.get("moe_every_n_layers", 0) or 0
        return cls(
            vocab_size=vocab,
            n_embd=cfg["n_embd"],
            n_head=cfg["n_head"],
            n_layer=cfg["n_layer"],
            n_inner=n_inner,
            type_vocab_size=cfg.get("type_vocab_size", 2),
            layer_norm_epsilon=cfg.get("layer_norm_epsilon", 1e-12),
            activation=activation,
            qkv_bias=bool(cfg.get("qkv_proj_bias", False)),
            fc1_bias=bool(cfg.get("mlp_fc1_bias", False)),
            fc2_bias=bool(cfg.get("mlp_fc2_bias", False)),
            rotary_base=rotary_base(cfg),
            rotary_scaling_factor=cfg.get("rotary_scaling_factor"),
            max_trained_positions=cfg.get("max_trained_positions", 2048),
            moe_every_n_layers=moe_every,
            num_experts=cfg.get("num_experts", 0) or 0,
            moe_top_k=cfg.get("moe_top_k", 2) or 2,
            pad_token_id=cfg.get("pad_token_id", 0) if cfg.get("pad_token_id") is not None else 0,
        )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def is_moe_layer(self, i: int) -> bool:
        return self.moe_every_n_layers > 0 and i % self.moe_every_n_layers == 1


def rotary_base(cfg: dict) -> float:
    """The hub code reads rotary_emb_base; a config written for native transformers may carry
    only rope_parameters.rope_theta (v1.5: 1000, not the hub code's default 10000)."""
    rope = cfg.get("rope_parameters") or {}
    for value in (cfg.get("rotary_emb_base"), rope.get("rope_theta"), cfg.get("rope_theta")):
        if value is not None:
            return float(value)
    return 10000.0


def rotary_tables(lengths: torch.Tensor, seq_len: int, cfg: NomicConfig):
    """cos, sin of shape [B or 1, S, head_dim] (GPT-NeoX layout [c, c]).

    With dynamic NTK scaling, the base of text b is scaled from its own length:
    base' = base * (f * L / Lt - (f - 1)) ** (d / (d - 2)) when L > Lt.
    """
    d = cfg.head_dim
    exponents = torch.arange(0, d, 2, dtype=torch.float32) / d
    if cfg.rotary_scaling_factor:
        f = float(cfg.rotary_scaling_factor)
        length = lengths.to(torch.float32)
        scaled = cfg.rotary_base * (f * length / cfg.max_trained_positions - (f - 1)) ** (d / (d - 2))
        base = torch.where(length > cfg.max_trained_positions, scaled, torch.full_like(length, cfg.rotary_base))
        inv_freq = 1.0 / base[:, None] ** exponents[None, :]  # [B, d/2]
    else:
        inv_freq = (1.0 / cfg.rotary_base**exponents)[None, :]  # [1, d/2]
    # int64 range, then float32: a float Range would take its limit through a Cast that the fp16
    # converter turns to fp16 (4803 -> 4804 positions), export/fp16.py
    positions = torch.arange(seq_len, dtype=torch.int64).to(torch.float32)
    freqs = positions[None, :, None] * inv_freq[:, None, :]  # [B, S, d/2]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def attention_bias(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, 1, 1, S]: 0 on real keys, the most negative float on padding (added to the scores)."""
    real = attention_mask[:, None, None, :] > 0
    return torch.where(real, 0.0, torch.finfo(torch.float32).min)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, S, D]; cos/sin: [B, S, D]. Rotate-half (non-interleaved)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[:, None] + rotated * sin[:, None]


class Attention(nn.Module):
    # ONNX export emits the core (rotary, masked softmax attention) as onnxruntime contrib ops,
    # export/attention_fused.py: same function, flash attention (no S x S scores), fewer nodes.
    fused_export = True

    def __init__(self, cfg: NomicConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.Wqkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.qkv_bias)
        self.out_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.qkv_bias)

    def forward(self, x, cos, sin, mask_bias):
        b, s, h = x.shape
        if self.fused_export and torch.onnx.is_in_onnx_export():
            from export.attention_fused import fused_attention

            # q, k, v as three MatMuls (their weights are row blocks of Wqkv, folded to constants)
            weights = self.Wqkv.weight.chunk(3)
            biases = self.Wqkv.bias.chunk(3) if self.Wqkv.bias is not None else (None,) * 3
            q, k, v = (F.linear(x, w, b) for w, b in zip(weights, biases))
            core = fused_attention(q, k, v, cos, sin, mask_bias, self.n_head, self.head_dim)
            return self.out_proj(core)
        qkv = self.Wqkv(x).view(b, s, 3, self.n_head, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, H, S, D]; q rows first, then k, then v
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + mask_bias
        out = scores.softmax(dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(b, s, h))


class GatedMLP(nn.Module):
    """v1.5: fc2(fc11(h) * silu(fc12(h))); fc12 is the gate."""

    def __init__(self, cfg: NomicConfig):
        super().__init__()
        self.fc11 = nn.Linear(cfg.n_embd, cfg.n_inner, bias=cfg.fc1_bias)
        self.fc12 = nn.Linear(cfg.n_embd, cfg.n_inner, bias=cfg.fc1_bias)
        self.fc2 = nn.Linear(cfg.n_inner, cfg.n_embd, bias=cfg.fc2_bias)

    def forward(self, x, real_tokens):
        return self.fc2(self.fc11(x) * F.silu(self.fc12(x)))


class GeluMLP(nn.Module):
    """v2 dense layers: fc2(gelu_erf(fc1(h)))."""

    def __init__(self, cfg: NomicConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.n_embd, cfg.n_inner, bias=cfg.fc1_bias)
        self.fc2 = nn.Linear(cfg.n_inner, cfg.n_embd, bias=cfg.fc2_bias)

    def forward(self, x, real_tokens):
        return self.fc2(F.gelu(self.fc1(x)))


class Router(nn.Module):
    def __init__(self, cfg: NomicConfig):
        super().__init__()
        self.layer = nn.Linear(cfg.n_embd, cfg.num_experts, bias=False)

    def forward(self, tokens):
        # Called as a module so the ONNX node is named .../router/..., which int8 keeps in fp32.
        return self.layer(tokens)


class ExpertWeights(nn.Module):
    def __init__(self, cfg: NomicConfig):
        super().__init__()
        e, f, h = cfg.num_experts, cfg.n_inner, cfg.n_embd
        self.w1 = nn.Parameter(torch.empty(e * f, h))  # expert-outer, used as x @ W1[e].T
        self.w2 = nn.Parameter(torch.empty(e * f, h))  # expert-outer, used as g @ W2[e]


class Experts(nn.Module):
    def __init__(self, cfg: NomicConfig):
        super().__init__()
        self.mlp = ExpertWeights(cfg)
        self.bias = nn.Parameter(torch.zeros(cfg.n_embd))  # one bias shared by all experts


class MoEMLP(nn.Module):
    """v2 MoE: softmax(router) in fp32 -> top-k (no renormalisation) -> weighted experts + bias."""

    def __init__(self, cfg: NomicConfig, mode: str = "sparse"):
        super().__init__()
        if mode not in MOE_MODES:
            raise ValueError(f"moe mode must be one of {MOE_MODES}, not {mode!r}")
        self.mode = mode
        self.num_experts, self.top_k = cfg.num_experts, cfg.moe_top_k
        self.n_inner, self.n_embd = cfg.n_inner, cfg.n_embd
        self.router = Router(cfg)
        self.experts = Experts(cfg)

    def route(self, tokens):
        """Router softmax [T, E] (fp32) and its top-k weights and experts [T, k] each."""
        probs = self.router(tokens).float().softmax(dim=-1)
        weights, experts = probs.topk(self.top_k, dim=-1)
        return probs, weights, experts

    def forward(self, x, real_tokens):
        shape = x.shape
        tokens = x.reshape(-1, self.n_embd)
        real = real_tokens.reshape(-1)
        if self.mode == "fused":
            from export.moe_fused import fused_moe

            out = fused_moe(tokens, self)
        elif self.mode == "dense":
            out = self.dense(tokens)
        else:
            out = self.sparse(tokens, real)
        return (out + self.experts.bias).reshape(shape)

    def expert(self, e: int, tokens):
        w1 = self.experts.mlp.w1.view(self.num_experts, self.n_inner, self.n_embd)[e]
        w2 = self.experts.mlp.w2.view(self.num_experts, self.n_inner, self.n_embd)[e]
        return F.gelu(tokens @ w1.t()) @ w2

    def sparse(self, tokens, real):
        """Each expert runs only on the real tokens routed to it; one gather combines them.

        Pair p = t * k + slot is token t's slot-th choice. The weighted expert outputs are
        stacked after a zero row; source[p] is pair p's row there (0: a padding token), so
        out[t] = sum over slots of stacked[source[t * k + slot]]. One gather instead of a
        scatter-add per expert, each of which copied the whole [T, H] output (3x slower).
        """
        _, weights, experts = self.route(tokens)
        k = self.top_k
        choices = (experts[..., None] == torch.arange(self.num_experts)) & real[:, None, None]
        choices = choices.reshape(-1, self.num_experts)  # [T * k, E]: pair p goes to expert e
        pair_weights = weights.reshape(-1)
        stacked, pairs = [tokens.new_zeros(1, self.n_embd)], []
        for e in range(self.num_experts):
            p = choices[:, e].nonzero().squeeze(1)
            stacked.append(self.expert(e, tokens[p // k]) * pair_weights[p][:, None])
            pairs.append(p)
        pairs = torch.cat(pairs)
        rows = torch.arange(1, pairs.shape[0] + 1)
        source = torch.zeros_like(pair_weights, dtype=torch.int64).scatter(0, pairs, rows)
        return torch.cat(stacked)[source].view(-1, k, self.n_embd).sum(dim=1)

    def dense(self, tokens):
        """Every expert on every token, weighted by a [T, E] matrix that is zero off the top-k."""
        probs, weights, experts = self.route(tokens)
        gate = torch.zeros_like(probs).scatter(1, experts, weights)
        out = torch.zeros_like(tokens)
        for e in range(self.num_experts):
            out = out + self.expert(e, tokens) * gate[:, e : e + 1]
        return out


class Block(nn.Module):
    """Post-norm: h = norm1(x + attn(x)); y = norm2(h + mlp(h))."""

    def __init__(self, cfg: NomicConfig, index: int, moe_mode: str):
        super().__init__()
        self.attn = Attention(cfg)
        if cfg.is_moe_layer(index):
            self.mlp = MoEMLP(cfg, moe_mode)
        elif cfg.activation == "swiglu":
            self.mlp = GatedMLP(cfg)
        else:
            self.mlp = GeluMLP(cfg)
        self.norm1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.norm2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)

    def forward(self, x, cos, sin, mask_bias, real_tokens):
        h = self.norm1(x + self.attn(x, cos, sin, mask_bias))
        return self.norm2(h + self.mlp(h, real_tokens))


class Embeddings(nn.Module):
    def __init__(self, cfg: NomicConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.n_embd)

    def forward(self, input_ids):
        # No token_type_ids are ever passed: upstream adds row 0 everywhere.
        return self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0]


class Encoder(nn.Module):
    def __init__(self, cfg: NomicConfig, moe_mode: str):
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg, i, moe_mode) for i in range(cfg.n_layer))


class NomicBertModel(nn.Module):
    """input_ids, attention_mask [B, S] int64 -> last_hidden_state [B, S, n_embd] float32."""

    def __init__(self, cfg: NomicConfig, moe_mode: str = "sparse"):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.emb_ln = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.encoder = Encoder(cfg, moe_mode)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.emb_ln(self.embeddings(input_ids))
        real_tokens = attention_mask > 0
        lengths = attention_mask.sum(dim=1)
        cos, sin = rotary_tables(lengths, input_ids.shape[1], self.config)
        mask_bias = attention_bias(attention_mask)
        for layer in self.encoder.layers:
            x = layer(x, cos, sin, mask_bias, real_tokens)
        return x

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: tuple(t.shape) for key, t in self.state_dict().items()}


def build_nomic(config: dict, tensors: dict[str, torch.Tensor], moe_mode: str = "sparse") -> NomicBertModel:
    cfg = NomicConfig.from_hf(config)
    model = NomicBertModel(cfg, moe_mode)
    from export.checkpoint import strip_and_check

    model.load_state_dict(strip_and_check(tensors, model.expected_shapes()), strict=True)
    return model.eval()
