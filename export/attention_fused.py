"""NomicBERT self-attention as onnxruntime contrib ops, used only while exporting to ONNX.

`fused_attention(q, k, v, cos, sin, mask_bias, n_head, head_dim)` is what `Attention.forward`
calls under `torch.onnx.export(..., dynamo=False)`. It is the same function as the plain math in
export/nomic_bert.py (rotary on q and k, softmax(q k^T / sqrt(d) + mask) v, heads merged),
emitted as

    q, k, v = MatMul(x, Wq), MatMul(x, Wk), MatMul(x, Wv)              # [B, S, H] each
    q = com.microsoft.RotaryEmbedding(q, positions, cos_cache, sin_cache)    # interleaved=0
    k = com.microsoft.RotaryEmbedding(k, positions, cos_cache, sin_cache)
    q' = [q_h, 1] per head,  k' = [k_h, 0 or PAD_LOGIT] per head       # head size d + 1
    out = com.microsoft.MultiHeadAttention(q', k', v)  scale=1/sqrt(d)  # [B, S, H]

Why this form (onnxruntime 1.32, CPU; measured on the v1.5 size, 768 wide, 12 heads):
- Rotary with per-text tables. With dynamic NTK every text has its own base, so cos/sin differ
  per batch row. RotaryEmbedding reads row position_ids[b, s] of a 2-D cache, so the cache is
  the [B' * S, d/2] stack of all rows' tables and position_ids[b, s] = b * S + s (B' = B with
  NTK scaling, else 1: every row then reads the same S rows). The kernel computes
  x * cos + rotate_half(x) * sin, the reference formula, in one pass instead of ~8 nodes.
- The padding mask rides in an extra head dimension. The CPU MultiHeadAttention kernel runs
  MLAS flash attention (L2-sized tiles: no [B, heads, S, S] tensor, which is 3.2 GB per layer
  for one 8192-token text) only when it gets no mask input; with a key_padding_mask it
  materialises the scores and is 14-27% slower (8 x 144 and 2 x 512 tokens). q' k'^T = q k^T + 1 * k_extra, which is
  q k^T exactly at real keys (k_extra = 0) and q k^T + PAD_LOGIT at padding. The scale is set
  to 1/sqrt(d), not the kernel's default 1/sqrt(d + 1).
- PAD_LOGIT / sqrt(d) = -3750 for d = 64: while real scores stay below ~1800 in magnitude,
  exp() at padded keys underflows to exactly 0 in fp32, as with the reference's finfo.min
  mask; it stays finite in fp16, where -inf could turn a fully padded tile into NaN.
- Where the flash kernel is not used (an onnxruntime without it, or a CPU that reports no L2
  cache size), the node falls back to the unfused kernel: same result, S x S memory.

- Three projections, not Wqkv and a Split: the int8 graph quantizes x once for all three
  (MatMulIntegerToFloat, like fc11/fc12), and no Split copies q, k and v out of one [B, S, 3H]
  tensor. Same numbers (per-channel scales are per output column). The saving (a Split is ~1.5% of
  a 128-token int8 forward in ORT's profile) is below what A/B runs on this shared machine resolve.
The int8 quantizer sees the projections and out_proj as plain MatMuls around these nodes.
Effect on the v1.5 int8 bundle (2 threads): +13-18% tokens/s at 128 and 512 tokens per text;
one 8192-token text peaks at 0.66 GB RSS instead of 7.0 GB.
"""

from __future__ import annotations

import math

import torch

MS_DOMAIN = "com.microsoft"
PAD_LOGIT = -30000.0  # added to q.k at padded keys, before the 1/sqrt(d) scale


class _AttentionOp(torch.autograd.Function):
    """2 x RotaryEmbedding + MultiHeadAttention when traced by the TorchScript exporter.

    forward: the function the nodes stand for, from the inputs they get (runs only while tracing).
    """

    @staticmethod
    def forward(ctx, q, k, v, cos_cache, sin_cache, positions, q_col, k_col, n_head, head_dim):
        from export.nomic_bert import apply_rotary

        b, s, _ = q.shape
        q, k, v = (x.view(b, s, n_head, head_dim).transpose(1, 2) for x in (q, k, v))  # [B, heads, S, d]
        cos = torch.cat([cos_cache[positions]] * 2, dim=-1)  # [B, S, d]
        sin = torch.cat([sin_cache[positions]] * 2, dim=-1)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        bias = k_col[:, None, None, :, 0, 0] / math.sqrt(head_dim)  # [B, 1, 1, S]
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + bias
        return (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, s, n_head * head_dim)

    @staticmethod
    def symbolic(g, q, k, v, cos_cache, sin_cache, positions, q_col, k_col, n_head, head_dim):
        hidden = n_head * head_dim

        def const(values):
            return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))

        heads = const([0, 0, n_head, head_dim])
        widened = const([0, 0, n_head * (head_dim + 1)])

        def rotary_plus(x, column):  # rotary, then one more element per head
            x = g.op(f"{MS_DOMAIN}::RotaryEmbedding", x, positions, cos_cache, sin_cache,
                     num_heads_i=n_head, interleaved_i=0)
            x.setType(v.type().with_sizes([None, None, hidden]))
            return g.op("Reshape", g.op("Concat", g.op("Reshape", x, heads), column, axis_i=-1), widened)

        out = g.op(f"{MS_DOMAIN}::MultiHeadAttention", rotary_plus(q, q_col), rotary_plus(k, k_col), v,
                   num_heads_i=n_head, scale_f=1.0 / math.sqrt(head_dim))
        out.setType(v.type().with_sizes([None, None, hidden]))
        return out


def fused_attention(q, k, v, cos, sin, mask_bias, n_head: int, head_dim: int):
    """Attention core of `export.nomic_bert.Attention` from its q, k, v projections [B, S, H]:
    rotary on q and k, masked softmax attention, heads merged -> [B, S, H].

    cos, sin: [B' in (1, B), S, d] rotary tables; mask_bias: [B, 1, 1, S], 0 at real keys.
    Only for `torch.onnx.export(..., dynamo=False)`; the plain math is in Attention.forward.
    """
    rows, seq = cos.shape[0], cos.shape[1]
    half = head_dim // 2
    cos_cache = cos[..., :half].reshape(-1, half)  # [B' * S, d/2]; the second half repeats it
    sin_cache = sin[..., :half].reshape(-1, half)
    # Built only from inputs every layer shares, so onnxruntime's common-subexpression elimination
    # keeps one copy for all layers (88 fewer nodes in v1.5) instead of one per layer.
    positions = torch.arange(rows * seq).view(rows, seq).expand(mask_bias.shape[0], seq)
    pad = torch.where(mask_bias[:, 0, 0, :] == 0, 0.0, PAD_LOGIT)  # [B, S]
    k_col = pad[:, :, None, None].expand(-1, -1, n_head, 1)  # k's extra element, per head
    q_col = torch.ones_like(k_col)  # q's extra element
    return _AttentionOp.apply(q, k, v, cos_cache, sin_cache, positions, q_col, k_col, n_head, head_dim)
