"""edge_embed.search: packed bits, int8 codes, exact Hamming top-k, rescoring."""
from __future__ import annotations

import numpy as np
import pytest

from edge_embed import Embedder, InputError
from edge_embed.search import (
    dequantize_int8,
    hamming_topk,
    int8_ranges,
    pack_bits,
    quantize_int8,
    rescore,
    search,
)


def _unit(rows, dim, seed):
    x = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_pack_bits_equals_embed_binary(bundle):
    model = Embedder(bundle("nomic-v15-tiny"), precision="fp32")
    texts = ["a cat sat", "the river is wide", "numbers 1 2 3"]
    np.testing.assert_array_equal(pack_bits(model.embed(texts, dim=32)), model.embed(texts, dim=32, binary=True))


def test_hamming_topk_is_exact_against_counted_bits():
    rng = np.random.default_rng(0)
    docs = rng.integers(0, 256, (5000, 12), dtype=np.uint8)  # 96 bits: scanned 8 bytes at a time
    queries = rng.integers(0, 256, (3, 12), dtype=np.uint8)
    unpacked = np.unpackbits(docs, axis=1)
    for query, (idx, dist) in zip(queries, zip(*hamming_topk(queries, docs, 7))):
        counted = (unpacked != np.unpackbits(query)).sum(axis=1)
        order = np.lexsort((np.arange(len(docs)), counted))[:7]  # nearest first, ties by index
        np.testing.assert_array_equal(idx, order)
        np.testing.assert_array_equal(dist, counted[order])
    odd = rng.integers(0, 256, (50, 3), dtype=np.uint8)  # a width that is no multiple of 8 bytes
    idx, dist = hamming_topk(odd[4], odd, 1)
    assert idx.tolist() == [4] and dist.tolist() == [0]


def test_int8_codes_round_trip_within_one_bucket():
    vectors = _unit(400, 64, 1)
    ranges = int8_ranges(vectors)
    codes = quantize_int8(vectors, ranges)
    assert codes.dtype == np.int8 and codes.min() == -128 and codes.max() == 127
    bucket = (ranges[1] - ranges[0]) / 255
    assert (np.abs(dequantize_int8(codes, ranges) - vectors) <= bucket / 2 + 1e-6).all()


def test_rescoring_recovers_the_float_top_k():
    centers = _unit(60, 64, 7)  # clustered documents: their neighbours are meaningful, not noise
    docs = centers[np.arange(3000) % 60] + 0.35 * _unit(3000, 64, 2)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[:20] * 0.6 + _unit(20, 64, 3) * 0.4
    exact = np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :10]
    ranges, bits = int8_ranges(docs), pack_bits(docs)

    def recall(found):
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)])

    binary, _ = search(queries, bits, 10)
    floats, scores = search(queries, bits, 10, rescore_with=docs, multiplier=10)
    int8, _ = search(queries, bits, 10, rescore_with=quantize_int8(docs, ranges), ranges=ranges, multiplier=10)
    assert recall(binary) < 0.6 and recall(floats) == 1.0 and recall(int8) >= 0.9  # measured: 0.37, 1.0, 0.975
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ docs.T, floats, axis=1), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_rescore_orders_given_candidates_by_dot_product():
    docs = _unit(10, 16, 4)
    idx, scores = rescore(docs[3], docs, np.array([0, 3, 7]), 2)
    assert idx[0] == 3 and scores[0] == pytest.approx(1.0, abs=1e-6) and len(idx) == 2


def test_bad_search_input_is_an_input_error():
    docs = _unit(10, 16, 5)
    with pytest.raises(InputError, match="multiple of 8"):
        pack_bits(docs[:, :12])
    with pytest.raises(InputError, match="need the ranges"):
        rescore(docs[0], quantize_int8(docs, int8_ranges(docs)), np.arange(5), 2)
    with pytest.raises(InputError, match="same width"):
        hamming_topk(pack_bits(docs[0]), pack_bits(docs[:, :8]), 3)
    with pytest.raises(InputError, match="k must be a positive int"):
        search(docs[0], pack_bits(docs), 0)
