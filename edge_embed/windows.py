"""A document longer than the max length, through the model in overlapping windows, each token once.

The document's tokens are   head (special tokens) + prefix (the task prefix) + text + tail.
Every window is head + prefix + a run of text tokens + tail, so each one is a well-formed input
with the task prefix. Neighbouring windows share `overlap` text tokens; a shared token takes its
state from the window where it sits further from the edge (the overlap is split at its middle), so
every text token has one state, computed with context on both sides. The head and the prefix take
their states from the first window, the tail from the last. The result is one state per token of
the whole document: chunk mode averages them, late chunking averages each chunk's share.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_embed.errors import InputError


@dataclass
class Window:
    ids: np.ndarray  # int64: head + prefix + text[start:stop] + tail
    keep_from: int  # the window's positions [keep_from, keep_to) hold states the document keeps,
    keep_to: int
    dest: int  # at document positions [dest, dest + keep_to - keep_from)


def text_runs(length: int, room: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(start, stop, keep_start, keep_stop) per window over `length` text tokens, `room` per window:
    the window holds text[start:stop] and text[keep_start:keep_stop] take their states from it."""
    overlap = min(overlap, room // 4)  # small windows: every window still moves on by 3/4 of its room
    starts = [0]
    while starts[-1] + room < length:
        starts.append(starts[-1] + room - overlap)
    stops = [min(start + room, length) for start in starts]
    cuts = [0] + [(next_start + stop) // 2 for next_start, stop in zip(starts[1:], stops)] + [length]
    return [(start, stop, cuts[i], cuts[i + 1]) for i, (start, stop) in enumerate(zip(starts, stops))]


def split_windows(
    head: list[int], prefix: list[int], text: list[int], tail: list[int], max_length: int, overlap: int
) -> list[Window]:
    """The windows of one document (a single window when it fits in max_length)."""
    lead = len(head) + len(prefix)
    total = lead + len(text) + len(tail)
    if total <= max_length:
        return [Window(np.asarray(head + prefix + text + tail, dtype=np.int64), 0, total, 0)]
    room = max_length - lead - len(tail)
    if room < 1:
        raise InputError(f"max_length {max_length} leaves no room for text after the special tokens "
                         "and the task prefix; use a larger max_length to chunk")
    runs = text_runs(len(text), room, overlap)
    windows = []
    for index, (start, stop, keep_start, keep_stop) in enumerate(runs):
        ids = np.asarray(head + prefix + text[start:stop] + tail, dtype=np.int64)
        first, last = index == 0, index == len(runs) - 1
        keep_from = 0 if first else lead + keep_start - start
        keep_to = len(ids) if last else lead + keep_stop - start
        windows.append(Window(ids, keep_from, keep_to, 0 if first else lead + keep_start))
    return windows
