"""Bundles exported from the tiny fixtures reproduce the upstream reference embeddings."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import golden, texts, truncation_text

from edge_embed import Embedder

FIXTURES = ["nomic-v15-tiny", "nomic-v15-tiny-longctx", "nomic-v2moe-tiny"]
FP32_TOLERANCE = 1e-4
INT8_MIN_COSINE = 0.98


def tasks(ref):
    return [None if t == "none" else str(t) for t in ref["meta.tasks"]]


def label(task):
    return "none" if task is None else task


def check(got: np.ndarray, want: np.ndarray, precision: str) -> None:
    if precision == "fp32":
        assert np.abs(got - want).max() <= FP32_TOLERANCE
    else:
        assert (got * want).sum(axis=1).min() >= INT8_MIN_COSINE


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("name", FIXTURES)
def test_batched_and_single_embeddings_match_reference(bundle, name, precision):
    ref, corpus = golden(name), texts(name)
    model = Embedder(bundle(name), precision=precision)
    for task in tasks(ref):
        for dim in ref["meta.matryoshka_dims"].tolist():
            batch = [corpus[i] for i in ref[f"{label(task)}.batch_index"]]
            check(model.embed(batch, task=task, dim=dim), ref[f"{label(task)}.embedding_d{dim}"], precision)
            singles = ref[f"{label(task)}.single.embedding_d{dim}"]
            # every text in one mixed-length batch, then each text alone
            check(model.embed(corpus, task=task, dim=dim), singles, precision)
            for i, text in enumerate(corpus):
                check(model.embed([text], task=task, dim=dim), singles[i : i + 1], precision)


@pytest.mark.parametrize("name", FIXTURES)
def test_tokens_and_truncation_match_reference(bundle, name):
    ref = golden(name)
    model = Embedder(bundle(name), precision="fp32")
    assert model.max_length == int(ref["meta.max_length"])
    for task in tasks(ref):
        key = label(task)
        encoded = model.tokenizer.encode(texts(name), model.prefix(task))
        assert [len(s) for s in encoded.sequences] == ref[f"{key}.seq_len"].tolist()
        long = model.tokenizer.encode([truncation_text(name)], model.prefix(task))
        assert long.truncated == [0]
        np.testing.assert_array_equal(long.sequences[0], ref[f"{key}.truncation.input_ids"][0])


def test_long_texts_use_their_own_ntk_base_in_a_mixed_batch(bundle):
    """Short and long texts in one padded batch give their single-text reference embeddings."""
    name = "nomic-v15-tiny-longctx"
    ref = golden(name)
    long_texts = [i for i, n in enumerate(ref["search_query.seq_len"]) if n > 64]
    assert long_texts, "the fixture must have texts past max_trained_positions"
    assert (ref["search_query.rope_base"][long_texts] > 1000).all()
    model = Embedder(bundle(name), precision="fp32")
    got = model.embed(texts(name), task="search_query", dim=64)
    want = ref["search_query.single.embedding_d64"]
    assert np.abs(got - want).max() <= FP32_TOLERANCE
