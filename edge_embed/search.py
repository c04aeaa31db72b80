"""Compact storage and exact search over embeddings (numpy only).

The usual recipe for binary search with rescoring (sentence-transformers' quantization guide):
keep every document as packed sign bits in RAM (dim / 8 bytes), find the k x multiplier nearest
by Hamming distance, then rescore that shortlist with the float query against the documents'
int8 (or float) vectors, and keep k.

    bits = pack_bits(doc_vectors)                      # uint8 [n, dim / 8]
    ranges = int8_ranges(doc_vectors)                  # float32 [2, dim], stored with the index
    codes = quantize_int8(doc_vectors, ranges)         # int8 [n, dim]
    indices, scores = search(query_vector, bits, k=10, rescore_with=codes, ranges=ranges)

Vectors are what Embedder.embed returns (after the bundle's Matryoshka recipe), so the sign bits
here equal embed(..., binary=True).
"""
from __future__ import annotations

import numpy as np

from edge_embed.errors import InputError, is_int

SCAN_ROWS = 1 << 16  # documents per Hamming block: bounds the XOR temporaries (6 MB at 768 bits)
_POPCOUNT = np.array([bin(byte).count("1") for byte in range(256)], dtype=np.uint8)  # numpy < 2.0


def _matrix(vectors, name: str) -> np.ndarray:
    array = np.asarray(vectors)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] == 0:
        raise InputError(f"{name} must be a [n, dim] array (or one [dim] vector), not shape {np.shape(vectors)}")
    return array


def pack_bits(vectors: np.ndarray) -> np.ndarray:
    """float [n, dim] (or [dim]) -> uint8 [n, dim / 8] (or [dim / 8]): bit i set where feature i > 0,
    numpy.packbits order (the same bits as Embedder.embed(..., binary=True))."""
    array = _matrix(vectors, "vectors")
    if array.shape[1] % 8:
        raise InputError(f"packing sign bits needs dim to be a multiple of 8, not {array.shape[1]}")
    packed = np.packbits(array > 0, axis=-1)
    return packed[0] if np.ndim(vectors) == 1 else packed


def int8_ranges(vectors: np.ndarray) -> np.ndarray:
    """Per-dimension (min, max) of a calibration set: float32 [2, dim]. Store them with the codes:
    quantize_int8 and rescore need the same ranges."""
    array = _matrix(vectors, "vectors").astype(np.float32)
    return np.stack([array.min(axis=0), array.max(axis=0)])


def _steps(ranges: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    ranges = np.asarray(ranges, dtype=np.float32)
    if ranges.shape != (2, dim):
        raise InputError(f"ranges must be float [2, {dim}] (from int8_ranges), not shape {ranges.shape}")
    start = ranges[0]
    step = np.maximum(ranges[1] - ranges[0], 1e-12) / 255  # a constant dimension: any step works
    return start, step


def quantize_int8(vectors: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """float [n, dim] -> int8 [n, dim]: each dimension's range cut into 256 buckets (values outside
    the calibration range are clipped)."""
    array = _matrix(vectors, "vectors")
    start, step = _steps(ranges, array.shape[1])
    codes = np.clip(np.floor((array - start) / step), 0, 255) - 128
    out = codes.astype(np.int8)
    return out[0] if np.ndim(vectors) == 1 else out


def dequantize_int8(codes: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """int8 [n, dim] -> float32 [n, dim]: each code's bucket centre."""
    array = _matrix(codes, "codes")
    start, step = _steps(ranges, array.shape[1])
    return (start + (array.astype(np.float32) + 128.5) * step).astype(np.float32)


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x) if hasattr(np, "bitwise_count") else _POPCOUNT[x]


def _top(scores: np.ndarray, k: int, largest: bool) -> np.ndarray:
    """Indices of the k best scores, best first; ties go to the lower index (deterministic)."""
    key = -scores if largest else scores
    if k < len(key):
        part = np.argpartition(key, k - 1)[:k]
        edge = key[part].max()
        better = np.flatnonzero(key < edge)
        tied = np.flatnonzero(key == edge)[: k - len(better)]
        part = np.concatenate([better, tied])
    else:
        part = np.arange(len(key))
    return part[np.lexsort((part, key[part]))]


def _check_k(k, n: int) -> int:
    if not (is_int(k) and k >= 1):
        raise InputError(f"k must be a positive int, not {k!r}")
    return min(int(k), n)


def hamming_distances(query_bits: np.ndarray, doc_bits: np.ndarray) -> np.ndarray:
    """uint8 [w] and uint8 [n, w] -> int32 [n]: differing bits, scanned SCAN_ROWS documents at a time."""
    doc_bits = np.asarray(doc_bits)
    query = np.asarray(query_bits, dtype=np.uint8)
    if doc_bits.dtype != np.uint8 or doc_bits.ndim != 2 or query.shape != (doc_bits.shape[1],):
        raise InputError(f"hamming search needs uint8 doc_bits [n, w] and query bits [w] of the same width, not "
                         f"{doc_bits.dtype} {doc_bits.shape} and {query.shape}")
    width = doc_bits.shape[1]
    words = np.uint64 if width % 8 == 0 else np.uint8  # 8 bytes at a time where the width allows
    query = query.view(words)
    out = np.empty(len(doc_bits), dtype=np.int32)
    for start in range(0, len(doc_bits), SCAN_ROWS):
        block = np.ascontiguousarray(doc_bits[start : start + SCAN_ROWS]).view(words)
        out[start : start + len(block)] = _popcount(block ^ query).sum(axis=1, dtype=np.int32)
    return out


def hamming_topk(query_bits: np.ndarray, doc_bits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by Hamming distance. query_bits uint8 [w] or [q, w], doc_bits uint8 [n, w] ->
    (indices int64 [k], distances int32 [k]) or [q, k] each; nearest first, ties by lower index."""
    queries = _matrix(query_bits, "query_bits")
    k = _check_k(k, len(doc_bits))
    indices, distances = [], []
    for query in queries:
        dist = hamming_distances(query, doc_bits)
        top = _top(dist, k, largest=False)
        indices.append(top)
        distances.append(dist[top])
    indices, distances = np.stack(indices).astype(np.int64), np.stack(distances)
    return (indices[0], distances[0]) if np.ndim(query_bits) == 1 else (indices, distances)


def rescore(
    query_float: np.ndarray,
    doc_vectors: np.ndarray,
    candidates: np.ndarray,
    k: int,
    ranges: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank candidate documents by the dot product of the float query with their stored vectors.

    query_float float [dim] or [q, dim]; doc_vectors float32 [n, dim], or int8 [n, dim] with the
    `ranges` they were quantized with; candidates int [c] or [q, c] -> (indices int64 [k],
    scores float32 [k]) or [q, k] each, best first (with unit vectors the scores are cosines)."""
    queries = _matrix(query_float, "query_float").astype(np.float32)
    cands = np.asarray(candidates, dtype=np.int64)
    cands = cands[None] if cands.ndim == 1 else cands
    doc_vectors = np.asarray(doc_vectors)
    if doc_vectors.ndim != 2 or doc_vectors.shape[1] != queries.shape[1] or len(cands) != len(queries):
        raise InputError(f"rescore needs doc_vectors [n, {queries.shape[1]}] and one candidate row per query, not "
                         f"{doc_vectors.shape} and {cands.shape}")
    if doc_vectors.dtype == np.int8 and ranges is None:
        raise InputError("int8 doc_vectors need the ranges they were quantized with (int8_ranges)")
    if cands.size and (cands.min() < 0 or cands.max() >= len(doc_vectors)):
        raise InputError(f"candidates must index doc_vectors (0..{len(doc_vectors) - 1})")
    k = _check_k(k, cands.shape[1])
    indices, scores = [], []
    for query, row in zip(queries, cands):
        stored = doc_vectors[row]
        stored = dequantize_int8(stored, ranges) if stored.dtype == np.int8 else stored.astype(np.float32)
        score = stored @ query
        top = _top(score, k, largest=True)
        indices.append(row[top])
        scores.append(score[top])
    indices, scores = np.stack(indices), np.stack(scores).astype(np.float32)
    return (indices[0], scores[0]) if np.ndim(query_float) == 1 else (indices, scores)


def search(
    query_float: np.ndarray,
    doc_bits: np.ndarray,
    k: int,
    rescore_with: np.ndarray | None = None,
    ranges: np.ndarray | None = None,
    multiplier: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """Binary top-k, optionally rescored.

    query_float float [dim] or [q, dim] (an embed() vector), doc_bits uint8 [n, dim / 8].
    Without rescore_with: the Hamming top-k, scored 1 - 2 * distance / dim (the cosine of the
    +-1 vectors). With rescore_with (float32 or int8 [n, dim], int8 with its ranges): the Hamming
    top k x multiplier, rescored with the float query, best k kept."""
    queries = _matrix(query_float, "query_float")
    if not (is_int(multiplier) and multiplier >= 1):
        raise InputError(f"multiplier must be a positive int, not {multiplier!r}")
    dim = queries.shape[1]
    bits = pack_bits(queries)
    if rescore_with is None:
        indices, distances = hamming_topk(bits, doc_bits, k)
        scores = (1 - 2 * distances / dim).astype(np.float32)
    else:
        _check_k(k, len(doc_bits))
        shortlist, _ = hamming_topk(bits, doc_bits, k * multiplier)
        indices, scores = rescore(queries, rescore_with, shortlist, k, ranges)
    return (indices[0], scores[0]) if np.ndim(query_float) == 1 else (indices, scores)
