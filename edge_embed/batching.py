"""Length-sorted batching that spends as little compute as possible on padding.

Texts are sorted longest first and cut into runs of neighbours. Where to cut is a small dynamic
program: it minimises padded tokens (batch size x longest text) plus a fixed cost per batch, under
the memory limits. On CPU a batch costs little beyond its tokens (about 16 tokens' time, measured on
the v1.5 int8 bundle, 2 threads), and bigger batches run slower per token (the activations fall out
of cache: 1,024 padded tokens beat 2,048 for dense models), so CPU batches stay small and tight.
GPUs are the other way round: a launch costs far more and big batches are cheap, so their defaults
allow long batches with more padding.

Some engines round a token's state differently with the padded length of its batch (OpenVINO's
float reductions), and static int8 turns such last-bit differences into whole int8 steps: MiniLM,
a text alone vs padded in a batch, cosine 0.99973. With pad_multiple > 1, lengths are rounded up
to that multiple and a batch holds one rounded length only, so a text is always padded to the same
length, whatever it is batched with, and gets the same vector (bit for bit on OpenVINO).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edge_embed.errors import InputError, is_int

# OpenVINO's static int8: lengths rounded up to 16 tokens (padding within ~7% at 128 tokens)
OPENVINO_INT8_PAD_MULTIPLE = 16
# Dense models on onnxruntime's CPU provider: batches of 1,024 padded tokens ran v1.5 1.06-1.20x faster
# than 2,048 end to end (int8, static and dynamic; 24- to 512-token texts; BENCHMARKS.md "Batch
# planning"); MoE models keep 2,048, where a bigger batch feeds each expert more tokens (0.97-1.02x).
CPU_DENSE_MAX_TOKENS = 1024
# A batch of more padded tokens than this and than the budget (one long text) gives onnxruntime's arena back
# after its run; up to it the arena keeps its buffers for the next batch (v1.5, 2,000-token texts with the
# 1,024 budget: shrinking after each cost ~4%).
ARENA_KEEP_TOKENS = 2048


@dataclass(frozen=True)
class BatchLimits:
    max_tokens: int = 2048  # padded tokens per batch (batch size x longest sequence)
    max_attention_cells: int = 1 << 24  # batch x S x S: bounds the attention score memory
    max_batch_size: int = 256
    batch_cost: int = 16  # the fixed cost of one more batch, in tokens' worth of compute
    pad_multiple: int = 1  # > 1: a text is padded to its length rounded up to this, in any batch

    def __post_init__(self):
        for name, least in (("max_tokens", 1), ("max_attention_cells", 1), ("max_batch_size", 1), ("batch_cost", 0),
                            ("pad_multiple", 1)):
            value = getattr(self, name)
            if not (is_int(value) and value >= least):
                raise InputError(f"BatchLimits.{name} must be an int >= {least}, not {value!r}")
            object.__setattr__(self, name, int(value))  # numpy ints in, plain ints kept (frozen dataclass)

    @classmethod
    def for_provider(cls, provider: str, precision: str | None = None, moe: bool = False) -> BatchLimits:
        """Defaults for the execution provider that runs the model (the precision it runs, whether it is MoE)."""
        if provider == "OpenVINO" and precision == "int8":  # edge_embed.openvino_backend: see the module doc
            return cls(pad_multiple=OPENVINO_INT8_PAD_MULTIPLE)
        if provider == "CPUExecutionProvider" and not moe:
            return cls(max_tokens=CPU_DENSE_MAX_TOKENS)
        if provider in ("CPUExecutionProvider", "OpenVINO"):
            return cls()
        return cls(max_tokens=16384, batch_cost=1024)


def plan_batches(lengths: list[int], limits: BatchLimits | None = None) -> Iterator[list[int]]:
    """Yield lists of sequence indices, longest first; each batch fits the limits
    (a single sequence always forms a batch, however long)."""
    limits = limits or BatchLimits()
    lengths = padded_lengths(np.asarray(lengths, dtype=np.int64), limits.pad_multiple)
    order = np.argsort(-lengths, kind="stable")
    longest_first = lengths[order]
    if limits.pad_multiple == 1:
        cuts = _cuts(longest_first, limits)
    else:  # one rounded length per batch: each run of equal lengths cut on its own
        bounds = np.flatnonzero(np.diff(longest_first)) + 1
        cuts = [(start + a, start + b) for start, stop in zip([0, *bounds], [*bounds, len(lengths)])
                for a, b in _cuts(longest_first[start:stop], limits)]
    for start, stop in cuts:
        yield order[start:stop].tolist()


def padded_lengths(lengths, multiple: int):
    """Lengths (an int or an int array) rounded up to a multiple (unchanged for 1)."""
    return lengths if multiple == 1 else -(-lengths // multiple) * multiple


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


def pad(sequences: list[np.ndarray], pad_id: int, multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad int64 id sequences -> input_ids, attention_mask [B, S]: S the longest sequence's length,
    rounded up to `multiple`."""
    longest = padded_lengths(max(len(seq) for seq in sequences), multiple)
    ids = np.full((len(sequences), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), longest), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask
