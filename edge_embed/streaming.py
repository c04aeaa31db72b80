"""Embedding an iterable of any length: read in blocks, batched within each block, yielded in order.

A block of STREAM_BLOCK texts is tokenized, cut into token-budget batches (longest first, as
embed() does) and pooled; its rows are yielded in input order once the whole block is done. Memory
is that of one block (its encodings, its pooled states, one batch's activations), however long the
iterable. Nothing outside the generator changes, so stopping it (break, close, a cancel event)
leaves the Embedder as it was.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Set, Sized
from itertools import islice
from typing import TYPE_CHECKING

import numpy as np

from edge_embed.errors import InputError
from edge_embed.tokenize import check_truncation

if TYPE_CHECKING:
    from edge_embed.embedder import Embedder

STREAM_BLOCK = 512  # texts per block: enough for tight length-sorted batches, ~1.5 MB of v1.5 states


def _check_iterable(texts) -> None:
    if isinstance(texts, (str, bytes)):
        raise InputError("texts must be an iterable of strings; wrap a single text as [text]")
    if isinstance(texts, (Mapping, Set)):  # their order is not the caller's rows
        raise InputError(f"texts must be an ordered iterable of strings, not a {type(texts).__name__}")
    if not isinstance(texts, Iterable):
        raise InputError(f"texts must be an iterable of strings, not {type(texts).__name__}")


def _blocks(model: Embedder, texts: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """(index of the block's first text, checked texts) for consecutive blocks."""
    iterator, start = iter(texts), 0
    while block := list(islice(iterator, STREAM_BLOCK)):
        yield start, model._check_texts(block, start)
        start += len(block)


def count_tokens(model: Embedder, texts: Iterable[str], prefix: str, truncation: str) -> int:
    """The tokens the model will run for `texts` (each sequence once, no padding)."""
    total = 0
    for _, block in _blocks(model, texts):
        total += sum(len(seq) for seq in model.tokenizer.encode(block, prefix, truncation).sequences)
    return total


def stream_embeddings(
    model: Embedder,
    texts: Iterable[str],
    prefix: str,
    dim: int,
    binary: bool,
    truncation: str,
    progress: Callable[[int, int | None], None] | None,
    cancel: threading.Event | None,
) -> Iterator[np.ndarray]:
    """Checks the arguments now (not at the first next()) and returns the generator."""
    _check_iterable(texts)
    check_truncation(truncation)
    if not isinstance(binary, (bool, np.bool_)):
        raise InputError(f"binary must be True or False, not {binary!r}")
    check_progress_and_cancel(progress, cancel)
    return _generate(model, texts, prefix, dim, binary, truncation, progress, cancel)


def check_progress_and_cancel(progress, cancel) -> None:
    """The progress and cancel arguments that embed_stream and embed_chunks share."""
    if progress is not None and not callable(progress):
        raise InputError(f"progress must be a callable(done_tokens, total_tokens) or None, not {progress!r}")
    if cancel is not None and not callable(getattr(cancel, "is_set", None)):
        raise InputError(f"cancel must be a threading.Event (or anything with is_set()) or None, not {cancel!r}")


def batch_reporter(progress: Callable[[int, int | None], None] | None, cancel: threading.Event | None,
                   total: int | None) -> Callable[[int], bool]:
    """on_batch(tokens) for a job's batches: adds them up into progress(done, total), and says False
    (stop between batches) once cancel is set."""
    done = 0

    def on_batch(tokens: int) -> bool:
        nonlocal done
        done += tokens
        if progress is not None:
            progress(done, total)
        return cancel is None or not cancel.is_set()

    return on_batch


def _generate(model, texts, prefix, dim, binary, truncation, progress, cancel) -> Iterator[np.ndarray]:
    sized = isinstance(texts, Sized) and not isinstance(texts, Iterator)
    total = count_tokens(model, texts, prefix, truncation) if sized and progress is not None else None
    on_batch = batch_reporter(progress, cancel, total)

    for _, block in _blocks(model, texts):
        if cancel is not None and cancel.is_set():
            return
        pooled = model.pooled(block, prefix, truncation, False, on_batch)
        if pooled is None:  # cancelled between batches
            return
        yield model.postprocess(pooled, dim, binary)
