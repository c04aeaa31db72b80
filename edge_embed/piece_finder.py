"""Which pieces of a vocabulary occur in a text, for the lean Unigram tokenizer (edge_embed.unigram).

Every substring of up to `longest` characters is hashed at once with numpy and looked up in a
table of the pieces' hashes: no Python object per substring (a set test per substring cost ~1 us of
interpreter, 1.5M of them for 10,000 texts). A substring that is a piece always hashes as the piece
does, so no piece the text contains is missed; a substring that only collides with a piece's hash
adds a piece the text does not contain, which tokenizers' Viterbi search never reaches.
"""
from __future__ import annotations

from bisect import bisect_left

import numpy as np

BASE = np.uint64(0x100000001B3)  # a substring's hash: sum of code point k * BASE**k, modulo 2**64
MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the top bits of hash * MIX pick a bit and a slot
FILTER_BITS = 24  # a bit per 16M hash values (2 MB): 1.5% of the substrings that are no piece get past it
SLOT_BITS = 20  # the table's slots (4 MB), the filter's top bits: XLM-R's 250k pieces leave most slots empty
PIECES_AT_ONCE = 1 << 14  # hashed together at load (1 MB of code points)
CHUNK_CHARS = 1 << 20  # characters hashed at a time (each length's hashes: 8 MB)
LOOKUP_AT_ONCE = 1 << 16  # hashes per lookup: its fixed cost (~15 us) dominates a short text's few hundred
BMP = 1 << 16  # single characters below this are looked up directly
BIT_OF = np.left_shift(np.uint8(1), np.arange(8, dtype=np.uint8))  # a filter byte's bit k


class PieceFinder:
    """The sorted pieces' hashes grouped by slot, `_starts[s]:_starts[s + 1]` for slot s, a bit
    filter that most substrings which are no piece fail, and the single-character pieces by code point."""

    def __init__(self, pieces: list[str]):
        self.longest = max(map(len, pieces))
        self._count = len(pieces)
        self._single = np.full(BMP, -1, dtype=np.int32)  # the piece of each character, where there is one
        hashes = np.concatenate([self._hashes_of(pieces[begin : begin + PIECES_AT_ONCE], begin)
                                 for begin in range(0, len(pieces), PIECES_AT_ONCE)])
        bits = self._bits(hashes).astype(np.uint32)  # scratch arrays kept small: they add to the load's peak
        self._filter = np.zeros(1 << (FILTER_BITS - 3), dtype=np.uint8)
        np.bitwise_or.at(self._filter, bits >> 3, np.left_shift(np.uint8(1), (bits & 7).astype(np.uint8)))
        slots = bits >> (FILTER_BITS - SLOT_BITS)
        del bits
        self._pieces = np.argsort(slots).astype(np.int32)
        self._hashes = hashes[self._pieces]
        del hashes
        self._starts = np.zeros((1 << SLOT_BITS) + 1, dtype=np.int32)  # slot s's entries start after those below
        np.add.at(self._starts, (slots + 1).astype(np.intp), np.int32(1))  # (numpy's fast path: 5x faster)
        np.cumsum(self._starts, out=self._starts)

    def _hashes_of(self, pieces: list[str], first: int) -> np.ndarray:
        # numpy's fixed-width strings are UCS-4 code points padded with zeros, and a zero adds nothing to a hash
        codes = np.array(pieces, dtype=f"<U{self.longest}").view(np.uint32).reshape(len(pieces), self.longest).T
        single = np.flatnonzero((codes[1] == 0) & (codes[0] < BMP)) if self.longest > 1 else np.arange(len(pieces))
        self._single[codes[0, single]] = first + single
        hashes = np.zeros(len(pieces), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for column in codes[::-1]:
                hashes *= BASE
                hashes += column
        return hashes

    @staticmethod
    def _bits(hashes: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            bits = np.multiply(hashes, MIX)
        np.right_shift(bits, np.uint64(64 - FILTER_BITS), out=bits)  # (in place: the finder's time is numpy passes)
        return bits.view(np.int64)

    def find(self, text: str) -> np.ndarray:
        """Which pieces occur in `text` (plus, rarely, a piece whose hash collides): a bool per piece."""
        found = np.zeros(self._count, dtype=bool)
        step = CHUNK_CHARS - self.longest + 1  # chunks overlap so that every substring lies in one
        for begin in range(0, max(len(text) - self.longest + 1, 1), step):
            self._mark(text[begin : begin + CHUNK_CHARS], found)
        return found

    def _mark(self, text: str, found: np.ndarray) -> None:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        bmp = codes < BMP
        single = self._single[codes[bmp]]
        found[single[single >= 0]] = True
        codes = codes.astype(np.uint64)
        queries = [codes[~bmp]]  # hashes looked up together once there are enough of them
        queued = len(queries[0])
        # No piece holds a line break (the exporter makes sure): substrings stop at one, which most
        # of the longer ones would cross, the text being one word per line.
        ends = np.full(len(codes), len(codes))
        breaks = np.flatnonzero(codes == ord("\n"))
        ends[breaks] = breaks
        room = np.minimum.accumulate(ends[::-1])[::-1] - np.arange(len(codes))  # characters before a break
        starts = np.flatnonzero(room >= 2)
        hashes = codes[starts]  # of the substrings of a length at each start, from 1 up
        power = np.uint64(1)
        with np.errstate(over="ignore"):
            for length in range(2, self.longest + 1):
                if not len(starts):
                    break
                power *= BASE
                hashes = hashes + codes[starts + (length - 1)] * power  # a new array: the last is queued
                queries.append(hashes)
                queued += len(hashes)
                if queued >= LOOKUP_AT_ONCE:
                    self._lookup(np.concatenate(queries), found)
                    queries, queued = [], 0
                longer = room[starts] > length
                starts, hashes = starts[longer], hashes[longer]
        if queries:
            self._lookup(np.concatenate(queries), found)

    def _lookup(self, hashes: np.ndarray, found: np.ndarray) -> None:
        bits = self._bits(hashes)
        passed = (self._filter[bits >> 3] & BIT_OF[bits & 7]).astype(bool)  # in uint8, not int64: 40% faster
        hashes, slots = hashes[passed], bits[passed] >> (FILTER_BITS - SLOT_BITS)
        at, end = self._starts[slots], self._starts[slots + 1]
        while True:  # a slot holds few entries: one round per entry, for the queries whose slot has one more
            live = at < end
            if not live.any():
                return
            hashes, at, end = hashes[live], at[live], end[live]
            hit = self._hashes[at] == hashes
            found[self._pieces[at[hit]]] = True
            at += 1


def find_by_bisect(pieces: list[str], text: str, longest: int) -> list[int]:
    """Positions in the sorted `pieces` of those that occur in `text`'s lines, exactly. From each
    start, longer substrings until no piece begins with one: the first piece at or after a substring
    (bisect) begins with it if any does. No table to build, and faster than PieceFinder on a few
    words (a query, the first text after loading)."""
    found = set()
    for word in text.split("\n"):
        for start in range(len(word)):
            for end in range(start + 1, min(len(word), start + longest) + 1):
                substring = word[start:end]
                at = bisect_left(pieces, substring)
                if at == len(pieces) or not pieces[at].startswith(substring):
                    break
                if pieces[at] == substring:
                    found.add(at)
    return sorted(found)
