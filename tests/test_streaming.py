"""Embedder.embed_stream: any iterable in, blocks of rows out, equal to embed(), stoppable."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from edge_embed import Embedder, InputError, streaming

NAME = "nomic-v15-tiny"
TEXTS = [f"note {i}: " + " ".join(f"word{(i * 7 + j) % 31}" for j in range(i % 12 + 1)) for i in range(60)]


@pytest.fixture(scope="module")
def model(bundle):
    return Embedder(bundle(NAME), precision="fp32", max_length=64)


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(streaming, "STREAM_BLOCK", 16)  # 60 texts: four blocks, the last one short


def _tokens(model, texts, prefix):
    """What the model runs for short texts: each text's ids, counted by the tokenizer itself."""
    return sum(len(model.tokenizer.tokenizer.encode(prefix + t).ids) for t in texts)


def test_a_generator_streams_the_same_vectors_as_embed(model, small_blocks):
    blocks = list(model.embed_stream((t for t in TEXTS), task="search_document", dim=48))
    assert [len(b) for b in blocks] == [16, 16, 16, 12]
    assert all(b.dtype == np.float32 and b.shape[1] == 48 for b in blocks)
    want = model.embed(TEXTS, task="search_document", dim=48)
    assert np.abs(np.concatenate(blocks) - want).max() <= 1e-6


def test_binary_and_chunked_streams_match_embed(model, small_blocks):
    long = [" ".join(f"w{j % 13} and so on" for j in range(i * 10 + 5)) for i in range(20)]
    bits = np.concatenate(list(model.embed_stream(iter(TEXTS), dim=64, binary=True)))
    assert bits.dtype == np.uint8
    np.testing.assert_array_equal(bits, model.embed(TEXTS, dim=64, binary=True))
    got = np.concatenate(list(model.embed_stream(iter(long), task="search_query", truncation="chunk")))
    assert np.abs(got - model.embed(long, task="search_query", truncation="chunk")).max() <= 1e-6


def test_progress_totals_add_up_to_the_tokens_embedded(model, small_blocks):
    calls = []
    list(model.embed_stream(TEXTS, task="search_query", progress=lambda done, total: calls.append((done, total))))
    expected = _tokens(model, TEXTS, "search_query: ")
    assert len(calls) >= 4 and calls[-1] == (expected, expected)
    assert all(a[0] < b[0] for a, b in zip(calls, calls[1:]))  # grows with every batch
    calls.clear()
    list(model.embed_stream(iter(TEXTS), progress=lambda done, total: calls.append((done, total))))
    assert calls[-1] == (_tokens(model, TEXTS, ""), None)  # length unknown


def test_breaking_out_mid_way_then_embedding_again(model, small_blocks):
    before = model.embed(TEXTS[:20])
    threads = threading.active_count()
    pulled = []

    def source():
        for text in TEXTS:
            pulled.append(text)
            yield text

    stream = model.embed_stream(source())
    first = next(stream)
    del stream  # the caller walks away: the generator is closed
    assert len(first) == 16 and len(pulled) == 16  # nothing read beyond the first block
    np.testing.assert_array_equal(model.embed(TEXTS[:20]), before)
    assert threading.active_count() == threads
    again = np.concatenate(list(model.embed_stream(TEXTS)))
    assert np.abs(again[:20] - before).max() <= 1e-6


def test_a_cancel_event_stops_between_batches(model, small_blocks):
    cancel, seen = threading.Event(), []

    def progress(done, total):
        seen.append(done)
        if len(seen) == 2:
            cancel.set()  # e.g. the user closed the folder, from the UI thread

    rows = sum(len(b) for b in model.embed_stream(TEXTS, progress=progress, cancel=cancel))
    assert len(seen) == 2 and rows < len(TEXTS)
    assert np.abs(model.embed(TEXTS[-3:]) - np.concatenate(list(model.embed_stream(TEXTS[-3:])))).max() <= 1e-6


def test_bad_stream_arguments_fail_at_the_call(model):
    with pytest.raises(InputError, match="wrap a single text"):
        model.embed_stream("one text")
    with pytest.raises(InputError, match="ordered iterable"):
        model.embed_stream({"a", "b"})
    with pytest.raises(InputError, match="truncation must be one of"):
        model.embed_stream(TEXTS, truncation="drop")
    with pytest.raises(InputError, match="progress must be a callable"):
        model.embed_stream(TEXTS, progress=True)
    with pytest.raises(InputError, match=r"texts\[17\] is a int"):
        list(model.embed_stream(TEXTS[:17] + [5]))
