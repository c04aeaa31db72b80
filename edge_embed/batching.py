"""Length-sorted batching that spends as little compute as possible on padding.

Texts are sorted longest first and cut into runs of neighbours. Where to cut is a small dynamic
program: it minimises padded tokens (batch size x longest text) plus a fixed cost per batch, under
the memory limits. On CPU a batch costs little beyond its tokens (about 16 tokens' time, measured on
the v1.5 int8 bundle, 2 threads), and batches past ~2k tokens run slower per token (the activations
fall out of cache), so CPU batches stay small and tight. GPUs are the other way round: a launch
costs far more and big batches are cheap, so their defaults allow long batches with more padding.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edge_embed.errors import InputError, is_int


@dataclass(frozen=True)
class BatchLimits:
    max_tokens: int = 2048  # padded tokens per batch (batch size x longest sequence)
    max_attention_cells: int = 1 << 24  # batch x S x S: bounds the attention score memory
    max_batch_size: int = 256
    batch_cost: int = 16  # the fixed cost of one more batch, in tokens' worth of compute

    def __post_init__(self):
        for name, least in (("max_tokens", 1), ("max_attention_cells", 1), ("max_batch_size", 1), ("batch_cost", 0)):
            value = getattr(self, name)
            if not (is_int(value) and value >= least):
                raise InputError(f"BatchLimits.{name} must be an int >= {least}, not {value!r}")
            object.__setattr__(self, name, int(value))  # numpy ints in, plain ints kept (frozen dataclass)

    @classmethod
    def for_provider(cls, provider: str) -> BatchLimits:
        """Defaults for the execution provider that runs the model."""
        if provider in ("CPUExecutionProvider", "OpenVINO"):  # OpenVINO: edge_embed.openvino_backend, on the CPU
            return cls()
        return cls(max_tokens=16384, batch_cost=1024)


def plan_batches(lengths: list[int], limits: BatchLimits | None = None) -> Iterator[list[int]]:
    """Yield lists of sequence indices, longest first; each batch fits the limits
    (a single sequence always forms a batch, however long)."""
    limits = limits or BatchLimits()
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    longest_first = lengths[order]
    for start, stop in _cuts(longest_first, limits):
        yield order[start:stop].tolist()


def _cuts(lengths: np.ndarray, limits: BatchLimits) -> list[tuple[int, int]]:
    """Optimal [start, stop) runs of the descending `lengths`: cost[j] is the least cost of
    batching the first j sequences, the last batch being lengths[start[j]:j]."""
    n = len(lengths)
    cost = np.zeros(n + 1)
    start = np.zeros(n + 1, dtype=np.int64)
    for stop in range(1, n + 1):
        first = np.arange(max(0, stop - limits.max_batch_size), stop)  # candidate batch starts
        size = stop - first
        longest = lengths[first]  # descending order: a run's first sequence is its longest
        fits = (size * longest <= limits.max_tokens) & (size * longest * longest <= limits.max_attention_cells)
        fits[-1] = True  # a sequence alone always fits
        total = np.where(fits, cost[first] + limits.batch_cost + size * longest, np.inf)
        best = int(np.argmin(total))  # ties go to the larger batch
        cost[stop], start[stop] = total[best], first[best]
    cuts, stop = [], n
    while stop > 0:
        cuts.append((int(start[stop]), stop))
        stop = int(start[stop])
    return cuts[::-1]


def pad(sequences: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad int64 id sequences -> input_ids, attention_mask [B, S_max]."""
    longest = max(len(seq) for seq in sequences)
    ids = np.full((len(sequences), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), longest), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask
