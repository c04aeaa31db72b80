"""A lean tokenizer for Unigram (XLM-R, SentencePiece-style) vocabularies.

The `tokenizers` library builds a byte trie of hash maps for a Unigram vocabulary: XLM-R's 250k
pieces cost ~290 MB of RSS and 0.6-1.7 s to load. Here the pieces live in one Python dict and
their scores in one array (~40 MB, ~0.1 s from the bundle's `tokenizer.unigram.json`), and only
the Viterbi search over each word is done in Python. Everything else is the `tokenizers`
library's own code: the normalizer, the splits, the alignments that give the offsets and the
template that adds the special tokens, so ids, offsets and the special-tokens mask are those
`tokenizers.Tokenizer.from_file("tokenizer.json")` gives (the tests check every text of the
evaluation sets and random Unicode). The file is written at export from tokenizer.json, for the
configurations this module reproduces (`export/lean_tokenizer.py`); other bundles load
tokenizer.json with the `tokenizers` library as before.
"""
from __future__ import annotations

import base64
import json
import sys
from array import array
from pathlib import Path

from tokenizers import PreTokenizedString, Regex, Token, Tokenizer

from edge_embed.errors import BundleError

LEAN_TOKENIZER_FILE = "tokenizer.unigram.json"
FORMAT = "edge-embed-unigram"
FORMAT_VERSION = 1
SEPARATOR = "\n"  # between pieces in the file; the exporter refuses vocabularies with a piece that has one
UNK_PENALTY = 10.0  # tokenizers' K_UNK_PENALTY: an unknown character scores min_score - 10
CACHE_WORDS = 50_000  # words whose pieces are kept; the cache is emptied when it is full


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
        pieces = data["pieces"].split(SEPARATOR)
        scores = array("d")
        scores.frombytes(base64.b64decode(data["scores"]))
        if sys.byteorder == "big":  # the file holds little-endian float64
            scores.byteswap()
        if len(pieces) != len(scores):
            raise ValueError(f"{len(pieces)} pieces but {len(scores)} scores")
        self._ids = {piece: index for index, piece in enumerate(pieces)}
        self._scores = scores.tolist()  # a list indexes faster than the array in the search loop
        self._unk_id = int(data["unk_id"])
        self._unk_score = min(self._scores) - UNK_PENALTY
        self._max_piece = max(map(len, pieces))
        # The normalizer and the template come from tokenizers itself, with a one-token model.
        shell = Tokenizer.from_str(json.dumps({
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
            "normalizer": data["normalizer"], "pre_tokenizer": None, "post_processor": data["post_processor"],
            "decoder": None, "model": {"type": "WordLevel", "vocab": {pieces[self._unk_id]: self._unk_id},
                                       "unk_token": pieces[self._unk_id]},
        }))
        self._normalizer = shell.normalizer
        self._post_processor = shell.post_processor
        special = sorted(data["special_tokens"], key=len, reverse=True)  # longest first, as tokenizers matches
        self._special_ids = {token: self._ids[token] for token in special}
        self._special = Regex("|".join(_regex_escape(token) for token in special)) if special else None
        self._replacement = data["replacement"]
        self._cache: dict[str, list[Token]] = {}

    @classmethod
    def from_file(cls, path: Path) -> UnigramTokenizer:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"{path} is not a version {FORMAT_VERSION} {FORMAT} file; re-export the bundle")
        return cls(data)

    def encode_batch(self, texts: list[str]) -> list[LeanEncoding]:
        return [self.encode(text) for text in texts]

    def encode(self, text: str) -> LeanEncoding:
        """tokenizers.Tokenizer.encode's steps, each with tokenizers' own primitives: split off the
        special tokens found in the text, normalize the rest, split it into words the way the
        Metaspace pre-tokenizer does, find each word's pieces, add the template's tokens."""
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
        pretokenized.tokenize(self._tokens)
        return LeanEncoding(self._post_processor.process(pretokenized.to_encoding()))

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
        tokens = self._cache.get(word)
        if tokens is None:
            special = self._special_ids.get(word)
            if special is not None:
                tokens = [Token(special, word, (0, len(word.encode("utf-8"))))]
            else:
                tokens = self._segment(word)
            if len(self._cache) >= CACHE_WORDS:
                self._cache.clear()
            self._cache[word] = tokens
        return tokens

    def _segment(self, word: str) -> list[Token]:
        """tokenizers' Unigram.encode_optimized: Viterbi over the word's characters in float64,
        pieces tried shortest first and replaced only by a strictly better score, an unknown
        character where no one-character piece starts, consecutive unknowns fused into one."""
        ids, scores, unk_id = self._ids, self._scores, self._unk_id
        size = len(word)
        best = [0.0] * (size + 1)
        start = [-1] * (size + 1)
        chosen = [unk_id] * (size + 1)
        for begin in range(size):
            here = best[begin]
            single = False
            for end in range(begin + 1, min(size, begin + self._max_piece) + 1):
                piece = ids.get(word[begin:end])
                if piece is None:
                    continue
                score = scores[piece] + here
                if start[end] < 0 or score > best[end]:
                    best[end], start[end], chosen[end] = score, begin, piece
                if end == begin + 1:
                    single = True
            if not single:
                score = self._unk_score + here
                if start[begin + 1] < 0 or score > best[begin + 1]:
                    best[begin + 1], start[begin + 1], chosen[begin + 1] = score, begin, unk_id
        spans: list[tuple[int, int, int]] = []
        end, unk_end = size, None
        while end > 0:
            begin = start[end]
            if chosen[end] == unk_id:
                unk_end = end if unk_end is None else unk_end
            else:
                if unk_end is not None:
                    spans.append((unk_id, end, unk_end))
                    unk_end = None
                spans.append((chosen[end], begin, end))
            end = begin
        if unk_end is not None:
            spans.append((unk_id, 0, unk_end))
        spans.reverse()
        return _tokens_at_bytes(word, spans)


def _tokens_at_bytes(word: str, spans: list[tuple[int, int, int]]) -> list[Token]:
    """Tokens with byte offsets into the word (what tokenizers' models return)."""
    tokens, position = [], 0
    for piece, begin, end in spans:
        text = word[begin:end]
        size = len(text.encode("utf-8"))
        tokens.append(Token(piece, text, (position, position + size)))
        position += size
    return tokens


def _regex_escape(token: str) -> str:
    """Every character as an Oniguruma code point escape: no character of a token is a metacharacter."""
    return "".join(f"\\x{{{ord(char):x}}}" for char in token)
