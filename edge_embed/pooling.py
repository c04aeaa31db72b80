"""Token states -> sentence embeddings: pooling (mean, or the first token), the Matryoshka recipe,
binary packing."""
from __future__ import annotations

import numpy as np


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """hidden [B, S, H] float32, mask [B, S] (1 = real token) -> [B, H] float32."""
    weights = mask.astype(np.float32)[:, :, None]
    summed = (hidden * weights).sum(axis=1)
    return summed / np.maximum(weights.sum(axis=1), 1e-9)


def cls_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """hidden [B, S, H] -> [B, H] float32: the first token's state ([CLS] or <s>; sentences are
    right-padded, so it is always real)."""
    return np.ascontiguousarray(hidden[:, 0], dtype=np.float32)


POOLINGS = {"mean": mean_pool, "cls": cls_pool}  # the manifest's "pooling" -> its function


def layer_norm(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Layer norm over the last axis without weight or bias (v1.5's Matryoshka step)."""
    x = x.astype(np.float64)
    centered = x - x.mean(axis=-1, keepdims=True)
    return centered / np.sqrt((centered**2).mean(axis=-1, keepdims=True) + eps)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def matryoshka(pooled: np.ndarray, dim: int, use_layer_norm: bool, eps: float = 1e-5) -> np.ndarray:
    """pooled [N, H] -> [N, dim] float32 with unit L2 norm.

    v1.5: layer_norm -> truncate -> L2 (model card); other models: truncate -> L2.
    """
    x = layer_norm(pooled, eps) if use_layer_norm else pooled.astype(np.float64)
    return l2_normalize(x[:, :dim]).astype(np.float32)


def binarize(embeddings: np.ndarray) -> np.ndarray:
    """[N, dim] float -> [N, dim / 8] uint8: bit i is 1 where feature i > 0 (big-endian bits)."""
    return np.packbits(embeddings > 0, axis=-1)
