"""Text -> token ids with the bundle's tokenizer.json: task prefix, special tokens, and
what to do with texts longer than the model's max length (truncate, reject or chunk)."""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from edge_embed.errors import BundleError, InputError
from edge_embed.unigram import UnigramTokenizer

TRUNCATION_MODES = ("truncate", "error", "chunk")
ENCODE_BLOCK = 2048  # texts per encode_batch call
HEAD_CHARS_PER_TOKEN = 32  # no tokenizer here makes a token of more characters, whitespace aside


def check_truncation(mode: str) -> None:
    if mode not in TRUNCATION_MODES:
        raise InputError(f"truncation must be one of {TRUNCATION_MODES}, not {mode!r}")


def _splits_words(char: str) -> bool:
    """Whitespace that every tokenizer here splits words at. Not control characters that merely
    count as whitespace (form feed, \x1c-\x1f, \x85): BERT's normalizer deletes those and joins
    the words around them."""
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _unencodable(texts: list[str], start: int) -> str:
    for offset, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (f"texts[{start + offset}] is not valid Unicode ({exc.reason} at character {exc.start}); "
                    "decode your input with errors='replace'")
    return f"the tokenizer could not take texts[{start}:{start + len(texts)}]"


@dataclass
class Encoded:
    """Token id sequences for a list of texts; a chunked text owns several sequences."""

    sequences: list[np.ndarray]  # int64 ids, each at most max_length long
    owner: np.ndarray  # [n_sequences] index of the text each sequence belongs to
    truncated: list[int]  # indices of texts that were cut to max_length
    chunked: list[int]  # indices of texts split into several sequences


def load_tokenizer(path: Path, lean: Path | None = None):
    """The bundle's lean Unigram file when it has one (edge_embed.unigram: same ids and offsets, a
    fraction of the memory), else tokenizer.json through the tokenizers library."""
    source = lean or path
    try:
        if lean is not None:
            return UnigramTokenizer.from_file(lean)
        tokenizer = Tokenizer.from_file(str(path))
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(f"cannot load tokenizer {source}: {exc}; re-export the bundle") from exc
    # The bundle decides padding and truncation, not whatever the file was saved with.
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


class TextTokenizer:
    def __init__(self, path: Path, max_length: int, chunk_overlap: int = 8, lean: Path | None = None):
        self.tokenizer = load_tokenizer(path, lean)
        self.max_length = max_length
        self.chunk_overlap = chunk_overlap
        self._prefix_ids: dict[str, list[int]] = {}

    def _split(self, encoding) -> tuple[list[int], list[int], list[int]]:
        """(leading special ids, content ids, trailing special ids) of one encoding."""
        ids, special = encoding.ids, encoding.special_tokens_mask
        start = 0
        while start < len(ids) and special[start]:
            start += 1
        end = len(ids)
        while end > start and special[end - 1]:
            end -= 1
        return ids[:start], ids[start:end], ids[end:]

    def prefix_ids(self, prefix: str) -> list[int]:
        if prefix not in self._prefix_ids:
            self._prefix_ids[prefix] = self._split(self.tokenizer.encode(prefix.rstrip()))[1] if prefix else []
        return self._prefix_ids[prefix]

    def _encodings(self, texts: list[str], prefix: str, whole: bool):
        """(index, tokenizers.Encoding, whether it covers only the text's head) for every text, made
        ENCODE_BLOCK texts at a time: an Encoding holds ~3 KB (tokens, offsets, masks), so encoding
        100k texts at once would hold 300 MB. Unless `whole`, a text far longer than max_length
        tokens is encoded from its head only."""
        for start in range(0, len(texts), ENCODE_BLOCK):
            block = texts[start : start + ENCODE_BLOCK]
            heads = [text if whole else self._head(text) for text in block]
            try:
                encodings = self.tokenizer.encode_batch([prefix + text for text in heads])
            except TypeError:  # tokenizers' message names no text: find the one it could not take
                raise InputError(_unencodable(block, start)) from None
            for offset, (text, head, encoding) in enumerate(zip(block, heads, encodings)):
                partial = head is not text
                if partial and len(encoding.ids) <= self.max_length:
                    encoding, partial = self.tokenizer.encode(prefix + text), False  # mostly whitespace
                yield start + offset, encoding, partial

    def _head(self, text: str) -> str:
        """The text cut at a whitespace after HEAD_CHARS_PER_TOKEN x max_length characters, or the text.

        Truncation keeps the first max_length tokens, and words before a whitespace cut tokenize as
        they do in the whole text, so a 10 MB document costs the tokens it keeps, not 3 million."""
        limit = self.max_length * HEAD_CHARS_PER_TOKEN
        if len(text) <= limit:
            return text
        cut = next((i for i in range(limit, min(len(text), limit + 1024)) if _splits_words(text[i])), None)
        return text[:cut] if cut else text  # no whitespace near the limit: keep the text whole
    def encode(self, texts: list[str], prefix: str = "", truncation: str = "truncate") -> Encoded:
        check_truncation(truncation)
        sequences, owner, truncated, chunked = [], [], [], []
        for index, encoding, partial in self._encodings(texts, prefix, whole=truncation == "chunk"):
            if len(encoding.ids) <= self.max_length:
                sequences.append(np.asarray(encoding.ids, dtype=np.int64))
                owner.append(index)
                continue
            if truncation == "error":
                raise InputError(
                    f"texts[{index}] has {'over ' if partial else ''}{len(encoding.ids)} tokens, more than the "
                    "model's max length "
                    f"{self.max_length}; shorten it, or pass truncation='truncate' or 'chunk' "
                    "(edge-embed embed: --truncation truncate|chunk)"
                )
            head, content, tail = self._split(encoding)
            room = self.max_length - len(head) - len(tail)
            if truncation == "truncate":
                sequences.append(np.asarray(head + content[:room] + tail, dtype=np.int64))
                owner.append(index)
                truncated.append(index)
                continue
            # chunk: every window keeps the special tokens and the task prefix
            kept = self.prefix_ids(prefix)
            if content[: len(kept)] != kept:
                kept = []
            body = content[len(kept):]
            window = room - len(kept)
            if window < 1:
                raise InputError(f"max_length {self.max_length} leaves no room for text after the special tokens "
                                 "and the task prefix; use a larger max_length to chunk")
            overlap = min(self.chunk_overlap, window // 2)  # small windows: every window still moves on
            step = window - overlap
            for start in range(0, max(len(body) - overlap, 1), step):
                piece = head + kept + body[start : start + window] + tail
                sequences.append(np.asarray(piece, dtype=np.int64))
                owner.append(index)
            chunked.append(index)
        return Encoded(sequences, np.asarray(owner, dtype=np.int64), truncated, chunked)
