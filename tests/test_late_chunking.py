"""Embedder.embed_chunks: one pass per document, each chunk the mean of its tokens' states."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from token_states import v15_recipe, whole_document_states
from tokenizers import Tokenizer

from edge_embed import Embedder, InputError
from edge_embed.search import pack_bits

NAME = "nomic-v15-tiny"
PREFIX = "search_document: "
DOC = ("Berlin is the capital of Germany. Its population is about 3.8 million people. "
       "The city is also one of the sixteen states. It lies on the river Spree.\n"
       "Many museums stand on an island in the river, and the old wall is now a park.")


@pytest.fixture(scope="module")
def tokenizer(bundle):
    return Tokenizer.from_file(str(bundle(NAME) / "tokenizer.json"))


def _reference(bundle_dir, tokenizer, text, spans, max_length, dim=64):
    """Per span: the mean of the states of the text tokens whose characters lie inside it (from the
    tokenizer's own offsets), through windows built by hand where the text is long; then v1.5's recipe."""
    encoding = tokenizer.encode(PREFIX + text)
    lead = len(tokenizer.encode(PREFIX).ids) - 1
    whole, _ = whole_document_states(bundle_dir, encoding.ids, lead, max_length)
    chars = np.asarray(encoding.offsets[lead:-1]) - len(PREFIX)  # text tokens only: no [CLS], prefix, [SEP]
    rows = [whole[lead:-1][(chars[:, 0] >= start) & (chars[:, 1] <= end)].mean(axis=0) for start, end in spans]
    return v15_recipe(np.stack(rows), dim)


def _spans(text, *pieces):
    out = []
    for piece in pieces:
        start = text.index(piece)
        out.append((start, start + len(piece)))
    return out


@pytest.mark.parametrize("max_length", [128, 24])  # the document fits; it needs 3+ windows
def test_given_spans_match_the_models_token_states(bundle, tokenizer, max_length):
    model = Embedder(bundle(NAME), precision="fp32", max_length=max_length)
    n_tokens = len(tokenizer.encode(PREFIX + DOC).ids)
    assert (n_tokens <= 128) and (n_tokens > 2 * 24)
    spans = _spans(DOC, "Berlin is the capital of Germany.", "Its population is about 3.8 million people.",
                   "It lies on the river Spree.", "the old wall is now a park.")
    [(got_spans, vectors)] = model.embed_chunks([DOC], spans=[spans])
    assert got_spans == spans and vectors.shape == (4, 64) and vectors.dtype == np.float32
    want = _reference(bundle(NAME), tokenizer, DOC, spans, max_length)
    assert np.abs(vectors - want).max() <= 1e-5


@pytest.mark.parametrize("max_length", [128, 24])
def test_spans_cut_by_the_runtime(bundle, tokenizer, max_length):
    model = Embedder(bundle(NAME), precision="fp32", max_length=max_length)
    [(spans, vectors)] = model.embed_chunks([DOC], chunk_tokens=14)
    assert len(spans) >= 4 and vectors.shape == (len(spans), 64)
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))  # in order, not overlapping
    for start, end in spans:  # whole words; at most 14 tokens each
        assert (start == 0 or DOC[start - 1].isspace()) and (end == len(DOC) or DOC[end].isspace())
        assert len(tokenizer.encode(DOC[start:end], add_special_tokens=False).ids) <= 14
    assert DOC[: spans[0][1]] == "Berlin is the capital of Germany."  # a sentence end within reach wins
    assert np.abs(vectors - _reference(bundle(NAME), tokenizer, DOC, spans, max_length)).max() <= 1e-5
    [(whole_doc, _)] = model.embed_chunks([DOC])  # default: ~256-token chunks, this one fits in one
    assert whole_doc == [(0, len(DOC))]


def test_a_chunk_keeps_its_documents_context(bundle):
    model = Embedder(bundle(NAME), precision="fp32")
    sentence = "Its population is about 3.8 million people."
    docs = [f"Berlin is in Germany. {sentence}", f"Lyon is in France. {sentence}"]
    spans = [_spans(d, sentence) for d in docs]
    (_, berlin), (_, lyon) = model.embed_chunks(docs, spans=spans)
    naive = model.embed([sentence, sentence], task="search_document")
    assert np.abs(berlin - lyon).max() > 1e-3 and np.abs(naive[0] - naive[1]).max() == 0


def test_dim_binary_and_several_documents(bundle):
    model = Embedder(bundle(NAME), precision="fp32", max_length=32)
    docs = [DOC, "A short note.", DOC.replace("Berlin", "Bonn")]
    floats = model.embed_chunks(docs, dim=32, chunk_tokens=20)
    bits = model.embed_chunks(docs, dim=32, binary=True, chunk_tokens=20)
    assert [s for s, _ in floats] == [s for s, _ in bits] and floats[1][0] == [(0, 13)]
    for (_, f), (_, b) in zip(floats, bits):
        assert f.shape[1] == 32 and b.dtype == np.uint8
        np.testing.assert_array_equal(b, pack_bits(f))
    alone = model.embed_chunks([docs[2]], dim=32, chunk_tokens=20)[0][1]
    assert np.abs(alone - floats[2][1]).max() <= 1e-6


def test_bad_spans_are_input_errors(bundle):
    model = Embedder(bundle(NAME), precision="fp32")
    with pytest.raises(InputError, match=r"spans\[0\]\[1\] = \(10, 999\) is outside documents\[0\]"):
        model.embed_chunks([DOC], spans=[[(0, 6), (10, 999)]])
    gap = DOC.index(" Its")
    with pytest.raises(InputError, match=r"spans\[0\]\[0\] = \(\d+, \d+\) holds no whole token"):
        model.embed_chunks([DOC], spans=[[(gap, gap + 1)]])
    with pytest.raises(InputError, match="one list of \\(start, end\\) pairs per document"):
        model.embed_chunks([DOC, DOC], spans=[[(0, 6)]])
    with pytest.raises(InputError, match="wrap a single document"):
        model.embed_chunks(DOC)
    with pytest.raises(InputError, match=r"documents\[1\] must be a non-empty string"):
        model.embed_chunks([DOC, "  "])


def test_sentencepiece_tokens_that_carry_a_space_count_for_the_word(bundle):
    """XLM-R's "▁word" tokens start at the space before the word: a span from the word's first letter
    still holds them."""
    model = Embedder(bundle("nomic-v2moe-tiny"), precision="fp32")
    spans = _spans(DOC, "Its population is about 3.8 million people.", "Spree.")
    [(got, vectors)] = model.embed_chunks([DOC], spans=[spans])
    assert got == spans and vectors.shape[0] == 2 and np.isfinite(vectors).all()
    [(cut, _)] = model.embed_chunks([DOC], chunk_tokens=12)
    assert all((s == 0 or DOC[s - 1].isspace()) and (e == len(DOC) or DOC[e].isspace()) for s, e in cut)


def test_progress_adds_up_and_cancel_returns_the_documents_done(bundle, tokenizer, monkeypatch):
    from edge_embed import late_chunking

    model = Embedder(bundle(NAME), precision="fp32", max_length=128)
    docs = [DOC, DOC.replace("Berlin", "Vienna"), "A short note about nothing."]
    calls = []
    full = model.embed_chunks(docs, chunk_tokens=20, progress=lambda done, total: calls.append((done, total)))
    tokens = sum(len(tokenizer.encode(PREFIX + d).ids) for d in docs)  # each fits: one window each
    assert calls[-1] == (tokens, tokens)
    monkeypatch.setattr(late_chunking, "BLOCK_TOKENS", 1)  # one document per block
    cancel = threading.Event()
    done = model.embed_chunks(docs, chunk_tokens=20, progress=lambda *_: cancel.set(), cancel=cancel)
    assert len(done) == 0  # set during the first batch: nothing finished
    cancel.clear()
    stopped = model.embed_chunks(docs, chunk_tokens=20, progress=lambda d, t: d > 60 and cancel.set(), cancel=cancel)
    assert 0 < len(stopped) < len(docs)
    for (spans, vectors), (want_spans, want) in zip(stopped, full):
        assert spans == want_spans and np.abs(vectors - want).max() <= 1e-6
