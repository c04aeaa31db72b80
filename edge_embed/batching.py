"""Length-sorted batching under a token budget, so little compute is spent on padding."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BatchLimits:
    max_tokens: int = 8192  # padded tokens per batch (batch size x longest sequence)
    max_attention_cells: int = 1 << 24  # batch x S x S: bounds the attention score memory
    max_batch_size: int = 256


def plan_batches(lengths: list[int], limits: BatchLimits | None = None) -> Iterator[list[int]]:
    """Yield lists of sequence indices, longest first; each batch fits the limits
    (a single sequence always forms a batch, however long)."""
    limits = limits or BatchLimits()
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    batch: list[int] = []
    for index in order.tolist():
        longest = lengths[batch[0]] if batch else lengths[index]
        size = len(batch) + 1
        fits = (
            size <= limits.max_batch_size
            and size * longest <= limits.max_tokens
            and size * longest * longest <= limits.max_attention_cells
        )
        if batch and not fits:
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


def pad(sequences: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad int64 id sequences -> input_ids, attention_mask [B, S_max]."""
    longest = max(len(seq) for seq in sequences)
    ids = np.full((len(sequences), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), longest), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask
