"""A lean tokenizer for Unigram (XLM-R, SentencePiece-style) vocabularies.

The `tokenizers` library builds a byte trie of hash maps for a Unigram vocabulary: XLM-R's 250k
pieces cost ~290 MB of RSS and 0.6-1.7 s to load. Here the pieces live in one sorted list, their
ids and scores in arrays (read from the bundle's `tokenizer.unigram.json`) and their hashes in a
table (edge_embed.piece_finder). Each batch gets tokenizers' Unigram model for only the pieces
that occur in its words, in a tokenizers.Tokenizer with the normalizer, pre-tokenizer, special
tokens and template tokenizer.json describes, and tokenizers' own encode_batch does the rest: ids,
offsets and the special-tokens mask are those `tokenizers.Tokenizer.from_file("tokenizer.json")`
gives (the tests check every text of the evaluation sets and random Unicode). The file is written
at export from tokenizer.json, for the configurations this module reproduces
(`export/lean_tokenizer.py`); other bundles load tokenizer.json with the `tokenizers` library as
before.
"""
from __future__ import annotations

import base64
import json
import re
import sys
import threading
from array import array
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

from edge_embed.errors import BundleError
from edge_embed.piece_finder import PieceFinder, find_by_bisect
from edge_embed.session import release_freed_heap

LEAN_TOKENIZER_FILE = "tokenizer.unigram.json"
FORMAT = "edge-embed-unigram"
FORMAT_VERSION = 1
GROUP_TEXTS = 16_384  # texts encoded together by encode_batches (their encodings: ~3 KB each)
PIPELINE_TEXTS = 256  # texts from which encode_batches builds one model while the last one runs
MODELS_AHEAD = 3  # models built and queued for the encoder thread while it runs (memory: ~10 MB each)
MIN_CLUSTER = 64  # texts of a script that get a model of their own
CLUSTER_CHARS = 256  # a text's script is read from its head: any grouping is exact, this one is fast
BISECT_CHARS = 512  # a batch with up to this many characters of words builds no table (bisect: ~1 ms at most)
CACHED_WORDS = 16_384  # words whose pieces a query's lookup remembers (~4 MB at most): queries repeat words
TABLE_NEW_CHARS = 96  # new words' characters past which the hash table (~0.15 ms) beats bisect (~2.5 us each)
SEPARATOR = "\n"  # between pieces in the file; the exporter refuses vocabularies with a piece that has one


class LeanEncoding:
    """What the runtime reads from a tokenizers.Encoding: ids (the vocabulary's, not the call's model's;
    `id_array` holds them as int64, `ids` makes a list of them at each read as tokenizers does), and
    the offsets, special-tokens mask and tokens, read from the Encoding when asked for (most texts
    never need them)."""

    __slots__ = ("id_array", "_encoding")

    def __init__(self, encoding, id_array: np.ndarray):
        self.id_array = id_array
        self._encoding = encoding

    @property
    def ids(self) -> list[int]:
        return self.id_array.tolist()

    @property
    def offsets(self) -> list[tuple[int, int]]:
        return self._encoding.offsets

    @property
    def special_tokens_mask(self) -> list[int]:
        return self._encoding.special_tokens_mask

    @property
    def tokens(self) -> list[str]:
        return self._encoding.tokens


class UnigramTokenizer:
    """Drop-in for the parts of tokenizers.Tokenizer that edge_embed uses (encode, encode_batch)."""

    def __init__(self, data: dict):
        # The pieces in sorted order (bisect gives a piece's position) and their ids: no dict of
        # 250k ids, whose int objects alone would take 7 MB.
        self._sorted = data["pieces"].split(SEPARATOR)
        self._order = _little_endian(array("i"), data["ids"])
        self._scores = _little_endian(array("d"), data["scores"])
        if not len(self._sorted) == len(self._order) == len(self._scores):
            raise ValueError("pieces, ids and scores do not match")
        self._ids = np.frombuffer(self._order, dtype=np.int32)  # the same memory, for numpy's indexing
        self._scores_by_id = np.frombuffer(self._scores, dtype=np.float64)
        self._longest = int(data["longest"])
        self._finder: PieceFinder | None = None  # built for the first batch of more than a few words
        self._finder_lock = threading.Lock()
        self._pieces_of_word: dict[str, array] = {}  # positions of each word's pieces, for short calls
        unk_id = int(data["unk_id"])
        special = list(dict.fromkeys(data["special_tokens"]))
        self._special_ids = {token: self._id(token) for token in special}
        # Every call's model starts with the special tokens, the unknown piece and the lowest-scoring
        # piece (an unknown character scores the vocabulary's lowest score minus 10), at fixed ids.
        lowest = int(np.argmin(self._scores_by_id))  # (the first, as list.index(min(...)) would give)
        head = list(dict.fromkeys([*special, self._piece(unk_id), self._piece(lowest)]))
        self._head = [bisect_left(self._sorted, piece) for piece in head]
        self._local_unk = head.index(self._piece(unk_id))
        # The normalizer and the template come from tokenizers itself; the template's ids are the head's.
        shell = Tokenizer.from_str(json.dumps({
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
            "normalizer": data["normalizer"], "pre_tokenizer": None,
            "post_processor": _local_template(data["post_processor"], head, self._id),
            "decoder": None, "model": {"type": "WordLevel", "vocab": {head[0]: 0}, "unk_token": head[0]},
        }))
        self._normalizer = shell.normalizer
        self._post_processor = shell.post_processor
        self._pre_tokenizer = pre_tokenizers.Metaspace(replacement=data["replacement"], prepend_scheme="always",
                                                       split=True)
        self._replacement = data["replacement"]
        self._added = [AddedToken(token, special=True, normalized=False) for token in special]
        # Special tokens are cut from the raw text as tokenizers does: leftmost, and the longest there.
        by_length = sorted(special, key=len, reverse=True)
        self._special = re.compile("|".join(map(re.escape, by_length))) if special else None

    def get_vocab_size(self, with_added_tokens: bool = True) -> int:
        """Ids run from 0 to the largest piece or special-token id (tokenizers' count, for the pad id check)."""
        return max(max(self._order), *self._special_ids.values(), -1) + 1

    def _id(self, piece: str) -> int:
        position = bisect_left(self._sorted, piece)
        if position == len(self._sorted) or self._sorted[position] != piece:
            raise ValueError(f"{piece!r} is not a piece of the vocabulary")
        return self._order[position]

    def _piece(self, piece_id: int) -> str:
        return self._sorted[int(np.flatnonzero(self._ids == piece_id)[0])]

    @classmethod
    def from_file(cls, path: Path) -> UnigramTokenizer:
        data = json.loads(Path(path).read_bytes())
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"{path} is not a version {FORMAT_VERSION} {FORMAT} file; re-export the bundle")
        try:
            tokenizer = cls(data)
        except ValueError as exc:
            raise BundleError(f"{path}: {exc}; re-export the bundle") from exc
        del data
        release_freed_heap()  # the file's text and JSON strings: ~14 MB of RSS given back
        return tokenizer

    def _piece_finder(self) -> PieceFinder:
        """The hash table of the pieces (~10 MB of RSS, ~50 ms to build), made when a batch first needs it."""
        with self._finder_lock:
            if self._finder is None:
                self._finder = PieceFinder(self._sorted)
                release_freed_heap()  # its ~20 MB of scratch arrays
            return self._finder

    def encode_batch(self, texts: list[str], add_special_tokens: bool = True) -> list[LeanEncoding]:
        """tokenizers.Tokenizer.encode_batch with a Unigram model of only the pieces that occur in
        these texts: the rest of the pipeline (special tokens, normalizer, Metaspace, template) is the
        one tokenizer.json describes. Tokenizers' Viterbi search looks at the pieces that occur in a
        word and at the vocabulary's lowest score, nothing else, so the small model gives the pieces
        the full one gives; its ~0.8 KB per piece lives for the call, the full model's ~290 MB would
        live for the process. Its ids are mapped back to the vocabulary's."""
        return next(self.encode_batches([texts], add_special_tokens))

    def encode_batch_fast(self, texts: list[str], add_special_tokens: bool = True) -> list[LeanEncoding]:
        """tokenizers.Tokenizer.encode_batch_fast: the same ids and special-tokens mask, no offsets ((0, 0) each)."""
        return next(self.encode_batches([texts], add_special_tokens, offsets=False))

    def encode(self, text: str, add_special_tokens: bool = True) -> LeanEncoding:
        return self.encode_batch([text], add_special_tokens)[0]

    def encode_batches(self, batches: Iterable[list[str]], add_special_tokens: bool = True, offsets: bool = True
                       ) -> Iterator[list[LeanEncoding]]:
        """encode_batch of each batch (encode_batch_fast without `offsets`). The texts of as many
        batches as make GROUP_TEXTS are encoded together, one model for each script among them (see
        _clusters): the cost of a model (finding its pieces, building it) grows much slower than its
        texts, and a smaller model runs faster (tokenizers' Viterbi search walks a trie of its pieces)."""
        batches = iter(batches)
        while group := list(_take_texts(batches, GROUP_TEXTS)):
            texts = [text for batch in group for text in batch]
            for text in texts:
                _check(text)
            encodings = self._encode_group(texts, add_special_tokens, offsets)
            del texts
            start = 0
            for batch in group:
                yield encodings[start : start + len(batch)]
                start += len(batch)

    def _encode_group(self, texts: list[str], add_special_tokens: bool, offsets: bool) -> list[LeanEncoding]:
        """Each cluster's model is built here while a thread runs the earlier clusters' encode_batch
        (tokenizers' Rust, which lets go of the GIL): building is serial Python and numpy, ~40% of
        the time, and would otherwise leave a core idle. Building runs up to MODELS_AHEAD models
        ahead of the encoder, so that a cluster whose model takes longer to build than the last one
        took to encode does not leave the encoder waiting (10,000 multilingual texts: 1.10 against
        1.20 times tokenizers' wall time with one model ahead). At most MODELS_AHEAD + 1 live at once."""
        encodings: list[LeanEncoding | None] = [None] * len(texts)

        def wrap(ids: np.ndarray, members: list[int], encoded: list) -> None:
            # The cluster's ids mapped in one numpy pass, into int64 rows the runtime takes as they are
            local = [encoding.ids for encoding in encoded]
            lengths = np.fromiter(map(len, local), dtype=np.intp, count=len(local))
            mapped = ids[np.fromiter(chain.from_iterable(local), dtype=np.intp, count=int(lengths.sum()))]
            for i, encoding, row in zip(members, encoded, np.split(mapped, np.cumsum(lengths[:-1]))):
                encodings[i] = LeanEncoding(encoding, row)

        def encode(tokenizer: Tokenizer):  # without offsets, tokenizers skips their byte -> character mapping
            return tokenizer.encode_batch if offsets else tokenizer.encode_batch_fast

        clusters = sorted(_clusters(texts), key=len)
        if len(clusters) > 2:  # the first build and the last encode overlap nothing: small ones there
            clusters.append(clusters.pop(1))
        if len(texts) < PIPELINE_TEXTS or len(clusters) == 1:  # a thread would cost more than it overlaps
            for members in clusters:
                cluster = [texts[i] for i in members]
                tokenizer, ids = self._tokenizer(cluster)
                wrap(ids, members, encode(tokenizer)(cluster, add_special_tokens=add_special_tokens))
            return encodings
        with ThreadPoolExecutor(max_workers=1) as encoder:
            queued: deque = deque()  # (ids, members, future) of the encodes handed to the thread, in order

            def wrap_first() -> None:
                ids, done_members, future = queued.popleft()
                wrap(ids, done_members, future.result())

            for members in clusters:
                cluster = [texts[i] for i in members]
                tokenizer, ids = self._tokenizer(cluster)
                queued.append((ids, members, encoder.submit(encode(tokenizer), cluster,
                                                            add_special_tokens=add_special_tokens)))
                del tokenizer  # the thread holds it until its encode is done
                # Wrapping a finished encode is Python (the GIL): done here, between builds, while the
                # thread encodes the next cluster. At most MODELS_AHEAD models wait for the thread.
                while queued and (len(queued) > MODELS_AHEAD or queued[0][2].done()):
                    wrap_first()
            while queued:
                wrap_first()
        return encodings

    def _tokenizer(self, texts: list[str]) -> tuple[Tokenizer, np.ndarray]:
        """tokenizers' Tokenizer for these texts and the vocabulary id of each of its model's ids."""
        pieces, ids = self._model_pieces(texts)
        tokenizer = Tokenizer(models.Unigram(pieces, self._local_unk, False))
        tokenizer.normalizer = self._normalizer
        tokenizer.pre_tokenizer = self._pre_tokenizer
        tokenizer.post_processor = self._post_processor
        tokenizer.add_special_tokens(self._added)  # the head's ids: they are the model's first pieces
        return tokenizer, ids

    def _model_pieces(self, texts: list[str]) -> tuple[list[tuple[str, float]], np.ndarray]:
        """(piece, score) of the head and of every piece in the texts' words, and each one's vocabulary id."""
        words = self._words(texts)
        found = self._remembered_pieces(words) if len(words) <= BISECT_CHARS else None  # a few words: no table
        if found is not None:
            positions = np.array(self._head + sorted(found.difference(self._head)), dtype=np.intp)
        else:
            hits = self._piece_finder().find(words)
            hits[self._head] = False
            positions = np.concatenate([self._head, np.flatnonzero(hits)])
        ids = self._ids[positions]
        pieces = list(zip(map(self._sorted.__getitem__, positions.tolist()), self._scores_by_id[ids].tolist()))
        return pieces, ids.astype(np.int64)

    def _remembered_pieces(self, words: str) -> set[int] | None:
        """Positions of the pieces in a few words (one per line): remembered words' from memory, new
        ones by bisect, then remembered (all forgotten when full; arrays: a list's int objects would
        take 3x the memory). None where the hash table exists and the new words are more than bisect
        does faster: the caller uses the table then."""
        remembered = self._pieces_of_word
        split = words.split("\n")
        known = [remembered.get(word) for word in split]
        new = [word for word, pieces in zip(split, known) if pieces is None]
        if self._finder is not None and sum(map(len, new)) > TABLE_NEW_CHARS:
            return None
        found = set().union(*(pieces for pieces in known if pieces is not None))
        for word in new:
            if len(remembered) >= CACHED_WORDS:
                remembered.clear()
            remembered[word] = pieces = array("i", find_by_bisect(self._sorted, word, self._longest))
            found.update(pieces)
        return found

    def _words(self, texts: list[str]) -> str:
        """The texts' words, one per line, as the Unigram model will see them: the text between
        special tokens, normalized, split at spaces and at the replacement, the replacement in
        front. Each distinct word once."""
        normalize, replacement = self._normalizer.normalize_str, self._replacement
        split = self._special.split if self._special is not None else lambda text: (text,)
        normalized = " ".join(normalize(part) for text in texts for part in split(text) if part)
        words = set(normalized.replace(replacement, " ").split(" "))
        return replacement + ("\n" + replacement).join(words)


def _clusters(texts: list[str]) -> list[list[int]]:
    """The texts' indices grouped by the 256-character block of the highest character in their first
    CLUSTER_CHARS (max over a whole passage costs 30 ms per 10,000 texts, and its head tells the script): mostly
    texts of one script, often of one language (Spanish has no ş, Turkish no ñ), whose words share
    pieces. Blocks with fewer than MIN_CLUSTER texts go together."""
    if len(texts) < MIN_CLUSTER:  # no block can have MIN_CLUSTER texts: one cluster, as below, without numpy
        return [list(range(len(texts)))] if texts else []
    heads = [text[:CLUSTER_CHARS] for text in texts]
    lengths = np.fromiter(map(len, heads), dtype=np.intp, count=len(heads))
    codes = np.frombuffer("".join(heads).encode("utf-32-le"), dtype=np.uint32)
    starts = np.cumsum(lengths) - lengths
    filled = lengths > 0  # (reduceat would read an empty head's neighbour)
    block_of = np.zeros(len(texts), dtype=np.uint32)
    if filled.any():
        block_of[filled] = np.maximum.reduceat(codes, starts[filled]) >> 8
    blocks: dict[int, list[int]] = {}
    for index, block in enumerate(block_of.tolist()):
        blocks.setdefault(block, []).append(index)
    clusters = [members for members in blocks.values() if len(members) >= MIN_CLUSTER]
    rest = sorted(index for members in blocks.values() if len(members) < MIN_CLUSTER for index in members)
    return clusters + [rest] if rest else clusters


def _take_texts(batches: Iterator[list[str]], count: int) -> Iterator[list[str]]:
    """Batches from `batches` until they hold `count` texts or more (at least one batch, if any is left)."""
    taken = 0
    for batch in batches:
        yield batch
        taken += len(batch)
        if taken >= count:
            return


def _check(text) -> None:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # what tokenizers raises for a lone surrogate
        raise TypeError(f"text is not valid Unicode: {exc.reason}") from None


def _local_template(template: dict, head: list[str], global_id) -> dict:
    """The template post-processor with its special tokens' ids in the per-call model (the head)."""
    template = json.loads(json.dumps(template))
    for entry in template.get("special_tokens", {}).values():
        local = []
        for token, token_id in zip(entry["tokens"], entry["ids"], strict=True):
            if token not in head or global_id(token) != token_id:
                raise ValueError(f"the template's special token {token!r} is not a special piece at id {token_id}")
            local.append(head.index(token))
        entry["ids"] = local
    return template


def _little_endian(values: array, encoded: str) -> array:
    values.frombytes(base64.b64decode(encoded))
    if sys.byteorder == "big":  # the file holds little-endian numbers
        values.byteswap()
    return values

