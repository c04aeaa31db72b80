"""A lean tokenizer for Unigram (XLM-R, SentencePiece-style) vocabularies.

The `tokenizers` library builds a byte trie of hash maps for a Unigram vocabulary: XLM-R's 250k
pieces cost ~290 MB of RSS and 0.6-1.7 s to load. Here the pieces live in one Python dict and
their scores in one array (read from the bundle's `tokenizer.unigram.json`), and each call builds
tokenizers' Unigram model for only the pieces that occur in its words. The rest is tokenizers'
own code too: the normalizer, the splits, the alignments that give the offsets and the template
that adds the special tokens, so ids, offsets and the special-tokens mask are those
`tokenizers.Tokenizer.from_file("tokenizer.json")` gives (the tests check every text of the
evaluation sets and random Unicode). The file is written at export from tokenizer.json, for the
configurations this module reproduces (`export/lean_tokenizer.py`); other bundles load
tokenizer.json with the `tokenizers` library as before.
"""
from __future__ import annotations

import base64
import json
import sys
import threading
from array import array
from bisect import bisect_left
from pathlib import Path

from tokenizers import PreTokenizedString, Regex, Token, Tokenizer, models

from edge_embed.errors import BundleError
from edge_embed.session import release_freed_heap

LEAN_TOKENIZER_FILE = "tokenizer.unigram.json"
FORMAT = "edge-embed-unigram"
FORMAT_VERSION = 1
SEPARATOR = "\n"  # between pieces in the file; the exporter refuses vocabularies with a piece that has one
CACHE_WORDS = 50_000  # words whose pieces are kept between calls (~10 MB)


class LeanEncoding:
    """What the runtime reads from a tokenizers.Encoding: ids, offsets, special-tokens mask."""

    __slots__ = ("ids", "offsets", "special_tokens_mask")

    def __init__(self, encoding):
        self.ids = encoding.ids
        self.offsets = encoding.offsets
        self.special_tokens_mask = encoding.special_tokens_mask


class UnigramTokenizer:
    """Drop-in for the parts of tokenizers.Tokenizer that edge_embed uses (encode, encode_batch)."""

    def __init__(self, data: dict):
        # The pieces in sorted order (bisect gives a piece's position) and their ids: no dict of
        # 250k ids, whose int objects alone would take 7 MB.
        self._sorted = data["pieces"].split(SEPARATOR)
        self._pieces = frozenset(self._sorted)
        self._order = _little_endian(array("i"), data["ids"])
        self._scores = _little_endian(array("d"), data["scores"])
        if not len(self._sorted) == len(self._pieces) == len(self._order) == len(self._scores):
            raise ValueError("pieces, ids and scores do not match")
        self._unk_id = int(data["unk_id"])
        self._unk_piece = self._piece(self._unk_id)
        self._lowest_piece = self._piece(self._scores.index(min(self._scores)))
        self._max_piece = int(data["longest"])  # characters in the longest piece
        # The normalizer and the template come from tokenizers itself, with a one-token model.
        shell = Tokenizer.from_str(json.dumps({
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
            "normalizer": data["normalizer"], "pre_tokenizer": None, "post_processor": data["post_processor"],
            "decoder": None, "model": {"type": "WordLevel", "vocab": {self._unk_piece: self._unk_id},
                                       "unk_token": self._unk_piece},
        }))
        self._normalizer = shell.normalizer
        self._post_processor = shell.post_processor
        special = sorted(data["special_tokens"], key=len, reverse=True)  # longest first, as tokenizers matches
        self._special_ids = {token: self._id(token) for token in special}
        self._special = Regex("|".join(_regex_escape(token) for token in special)) if special else None
        self._replacement = data["replacement"]
        self._cache: dict[str, list[Token]] = {}
        self._lock = threading.Lock()

    def get_vocab_size(self, with_added_tokens: bool = True) -> int:
        """Ids run from 0 to the largest piece or special-token id (tokenizers' count, for the pad id check)."""
        return max(max(self._order), *self._special_ids.values(), -1) + 1

    def _id(self, piece: str) -> int:
        return self._order[bisect_left(self._sorted, piece)]

    def _piece(self, piece_id: int) -> str:
        return self._sorted[self._order.index(piece_id)]

    @classmethod
    def from_file(cls, path: Path) -> UnigramTokenizer:
        data = json.loads(Path(path).read_bytes())
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"{path} is not a version {FORMAT_VERSION} {FORMAT} file; re-export the bundle")
        tokenizer = cls(data)
        del data
        release_freed_heap()  # the file's text and JSON strings: 51 -> 37 MB of RSS kept after loading
        return tokenizer

    def encode_batch(self, texts: list[str]) -> list[LeanEncoding]:
        """tokenizers.Tokenizer.encode's steps, each with tokenizers' own primitives: split off the
        special tokens found in the text, normalize the rest, split it into words the way the
        Metaspace pre-tokenizer does, cut each word into pieces with tokenizers' Unigram model,
        add the template's tokens. The words of the whole batch are cut at once (see _cut)."""
        with self._lock:  # the word cache is shared: one Embedder may serve many threads
            return self._encode_batch(texts)

    def _encode_batch(self, texts: list[str]) -> list[LeanEncoding]:
        staged = [self._words(text) for text in texts]
        needed = {word for pretokenized in staged for word, _, _ in pretokenized.get_splits()}
        missing = needed - self._cache.keys() - self._special_ids.keys()
        if len(self._cache) + len(missing) > CACHE_WORDS:  # keep what this call needs, drop the rest
            self._cache = {word: self._cache[word] for word in needed & self._cache.keys()}
        if missing:
            self._cut(missing)
        out = []
        for pretokenized in staged:
            pretokenized.tokenize(self._tokens)
            out.append(LeanEncoding(self._post_processor.process(pretokenized.to_encoding())))
        return out

    def encode(self, text: str) -> LeanEncoding:
        return self.encode_batch([text])[0]

    def _words(self, text: str) -> PreTokenizedString:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # what tokenizers raises for a lone surrogate
            raise TypeError(f"text is not valid Unicode: {exc.reason}") from None
        pretokenized = PreTokenizedString(text)
        if self._special is not None:
            pretokenized.split(self._split_special)
        pretokenized.normalize(self._normalize)
        pretokenized.split(self._split_words)
        return pretokenized

    def _split_special(self, _index, normalized):
        return normalized.split(self._special, "isolated")

    def _normalize(self, normalized) -> None:
        if normalized.normalized not in self._special_ids:
            self._normalizer.normalize(normalized)

    def _split_words(self, _index, normalized):
        """Metaspace(replacement, prepend_scheme="always", split=True), as tokenizers does it."""
        if normalized.normalized in self._special_ids:
            return [normalized]
        normalized.replace(" ", self._replacement)
        if not normalized.normalized.startswith(self._replacement):
            normalized.prepend(self._replacement)
        return normalized.split(self._replacement, "merged_with_next")

    def _tokens(self, word: str) -> list[Token]:
        special = self._special_ids.get(word)
        if special is not None:
            return [Token(special, word, (0, len(word.encode("utf-8"))))]
        return self._cache[word]

    def _cut(self, words: set[str]) -> None:
        """Pieces of each word, from tokenizers' own Unigram model built for these words only.

        Its Viterbi search looks at the pieces that occur in the word and at the vocabulary's lowest
        score (an unknown character scores that minus 10), nothing else: a model with exactly those
        pieces, their scores and the unknown token gives the same pieces as the full one. It costs
        ~1 KB per piece while it lives; the full vocabulary's costs ~290 MB for the process's life."""
        longest = self._max_piece
        tails = {word[begin:begin + longest] for word in words for begin in range(len(word))}
        substrings = {tail[:end] for tail in tails for end in range(1, len(tail) + 1)}
        pieces = [self._unk_piece, self._lowest_piece, *(substrings & self._pieces)]
        global_ids = [self._id(piece) for piece in pieces]
        scores = self._scores
        model = models.Unigram([(piece, scores[i]) for piece, i in zip(pieces, global_ids)], 0, False)
        for word in words:
            self._cache[word] = [Token(global_ids[token.id], token.value, token.offsets)
                                 for token in model.tokenize(word)]


def _little_endian(values: array, encoded: str) -> array:
    values.frombytes(base64.b64decode(encoded))
    if sys.byteorder == "big":  # the file holds little-endian numbers
        values.byteswap()
    return values


def _regex_escape(token: str) -> str:
    """Every character as an Oniguruma code point escape: no character of a token is a metacharacter."""
    return "".join(f"\\x{{{ord(char):x}}}" for char in token)
