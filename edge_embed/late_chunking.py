"""Late chunking (Günther et al. 2024, arXiv 2409.04701): one forward pass per document, then one
vector per chunk from the token states inside the chunk's characters.

A document runs through the model whole (in overlapping windows when it is longer than the max
length, edge_embed/windows.py), with the task prefix in front. A chunk's vector is the mean of the
states of the text tokens whose characters lie inside the chunk's (start, end) span; the special
tokens and the prefix shape every state but belong to no chunk. Then the bundle's Matryoshka recipe.
Each chunk's vector so carries its document's context ("its population" knows which city).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from edge_embed.batching import plan_batches
from edge_embed.errors import InputError, NonFiniteError, is_int
from edge_embed.streaming import batch_reporter, check_progress_and_cancel
from edge_embed.tokenize import Document
from edge_embed.windows import Window, split_windows

if TYPE_CHECKING:
    from edge_embed.embedder import Embedder

CHUNK_TOKENS = 256  # the size of the chunks the runtime cuts itself
BLOCK_TOKENS = 16384  # document tokens whose states are held at once (48 MB of v1.5 states)
SENTENCE_ENDS = ".!?。！？"

Span = tuple[int, int]


def cut_spans(text: str, token_spans: np.ndarray, chunk_tokens: int = CHUNK_TOKENS) -> list[Span]:
    """Chunks of at most chunk_tokens tokens, cut at a sentence end where one falls in a chunk's
    second half, else at whitespace, else anywhere. token_spans: int [n, 2], each text token's
    characters. Returns (start, end) character spans from a chunk's first token to its last."""
    n = len(token_spans)
    starts, ends = token_spans[:, 0], token_spans[:, 1]
    # a boundary before token t: whitespace between tokens t - 1 and t
    gap = np.zeros(n + 1, dtype=bool)
    gap[1:n] = starts[1:] > ends[:-1]
    sentence = gap.copy()
    for t in np.flatnonzero(gap):
        between = text[ends[t - 1] : starts[t]]
        sentence[t] = text[ends[t - 1] - 1] in SENTENCE_ENDS or "\n" in between
    spans, first = [], 0
    while first < n:
        stop = min(first + chunk_tokens, n)
        if stop < n:
            candidates = np.arange(first + max(chunk_tokens // 2, 1), stop + 1)
            for kind in (sentence, gap):
                found = candidates[kind[candidates]]
                if found.size:
                    stop = int(found[-1])
                    break
        spans.append((int(starts[first]), int(ends[stop - 1])))
        first = stop
    return spans


def token_masks(document: Document, spans: Sequence[Span], text: str, index: int) -> np.ndarray:
    """bool [len(spans), len(text tokens)]: the tokens whose characters lie inside each span."""
    masks = np.zeros((len(spans), len(document.text)), dtype=bool)
    for row, span in enumerate(spans):
        if not (isinstance(span, (tuple, list)) and len(span) == 2 and all(is_int(x) for x in span)):
            raise InputError(f"spans[{index}][{row}] must be a (start, end) pair of ints, not {span!r}")
        start, end = int(span[0]), int(span[1])
        if not 0 <= start < end <= len(text):
            raise InputError(f"spans[{index}][{row}] = {span!r} is outside documents[{index}] (characters 0 to "
                             f"{len(text)}, start < end)")
        masks[row] = (document.spans[:, 0] >= start) & (document.spans[:, 1] <= end)
        if not masks[row].any():
            raise InputError(f"spans[{index}][{row}] = {span!r} holds no whole token of documents[{index}] "
                             f"({text[start:end]!r}); widen it to whole words or drop it")
    return masks


def _check_documents(documents) -> list[str]:
    if isinstance(documents, str) or not isinstance(documents, Sequence):
        raise InputError("documents must be a list of strings; wrap a single document as [document]")
    for index, text in enumerate(documents):
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"documents[{index}] must be a non-empty string, not {text!r:.40}")
    return list(documents)


def _blocks(documents: list[Document]) -> list[list[int]]:
    """Consecutive documents whose tokens add up to about BLOCK_TOKENS (a longer one alone)."""
    blocks, current, size = [], [], 0
    for index, doc in enumerate(documents):
        length = doc.lead + len(doc.text) + len(doc.tail)
        if current and size + length > BLOCK_TOKENS:
            blocks.append(current)
            current, size = [], 0
        current.append(index)
        size += length
    return blocks + ([current] if current else [])


def _windows(model: Embedder, documents: list[Document]) -> list[tuple[int, Window]]:
    return [(d, w) for d, doc in enumerate(documents)
            for w in split_windows(doc.head, doc.prefix, doc.text, doc.tail, model.max_length,
                                   model.tokenizer.chunk_overlap)]


def document_states(
    model: Embedder, documents: list[Document], on_batch: Callable[[int], bool] | None = None
) -> list[np.ndarray] | None:
    """float32 [tokens, hidden] per document: every token's state once, windows batched together.
    on_batch(tokens) after each batch; when it returns False, None (the rest is skipped)."""
    windows = _windows(model, documents)
    states = [np.empty((doc.lead + len(doc.text) + len(doc.tail), model.manifest.hidden_size), np.float32)
              for doc in documents]
    for batch in plan_batches([len(w.ids) for _, w in windows], model.batch_limits):
        ids, mask = model.pad([windows[i][1].ids for i in batch])
        hidden = model._run(ids, mask)
        for row, i in enumerate(batch):
            d, w = windows[i]
            states[d][w.dest : w.dest + w.keep_to - w.keep_from] = hidden[row, w.keep_from : w.keep_to]
        if on_batch is not None and not on_batch(int(mask.sum())):
            return None
    return states


def embed_chunks(
    model: Embedder,
    documents: Sequence[str],
    spans: Sequence[Sequence[Span]] | None,
    prefix: str,
    dim: int,
    binary: bool,
    chunk_tokens: int = CHUNK_TOKENS,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> list[tuple[list[Span], np.ndarray]]:
    texts = _check_documents(documents)
    check_progress_and_cancel(progress, cancel)
    if spans is not None and (isinstance(spans, str) or not isinstance(spans, Sequence) or len(spans) != len(texts)):
        raise InputError(f"spans must be None or one list of (start, end) pairs per document ({len(texts)})")
    if not (is_int(chunk_tokens) and chunk_tokens >= 1):
        raise InputError(f"chunk_tokens must be a positive int, not {chunk_tokens!r}")
    tokens = [model.tokenizer.encode_document(text, prefix) for text in texts]
    chosen = [cut_spans(text, doc.spans, chunk_tokens) if spans is None else [tuple(s) for s in spans[i]]
              for i, (text, doc) in enumerate(zip(texts, tokens))]
    masks = [token_masks(doc, chunks, text, i) for i, (doc, chunks, text) in enumerate(zip(tokens, chosen, texts))]
    total = sum(len(w.ids) for _, w in _windows(model, tokens)) if progress is not None else 0
    on_batch = batch_reporter(progress, cancel, total)

    results = []
    for block in _blocks(tokens):
        if cancel is not None and cancel.is_set():
            break
        block_states = document_states(model, [tokens[d] for d in block], on_batch)
        if block_states is None:  # cancelled: the documents done so far, in order
            break
        for d, states in zip(block, block_states):
            text_states = states[tokens[d].lead : tokens[d].lead + len(tokens[d].text)].astype(np.float64)
            pooled = (masks[d] @ text_states) / masks[d].sum(axis=1, keepdims=True)
            if not np.isfinite(pooled).all():
                fix = "re-export the bundle" if model.precision == "fp32" else "use precision='fp32'"
                raise NonFiniteError(f"the {model.precision} model gave NaN or infinite states for documents[{d}]; "
                                     + fix)
            results.append((chosen[d], model.postprocess(pooled.astype(np.float32), dim, binary)))
    return results
