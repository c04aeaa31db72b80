"""Text -> token ids with the bundle's tokenizer.json: task prefix, special tokens, and
what to do with texts longer than the model's max length (truncate, reject or chunk)."""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from edge_embed.errors import BundleError, InputError, TextTooLongError
from edge_embed.unigram import LeanEncoding, UnigramTokenizer
from edge_embed.windows import split_windows

TRUNCATION_MODES = ("truncate", "error", "chunk")
ENCODE_BLOCK = 2048  # texts per encode_batch call
CHUNK_OVERLAP = 64  # text tokens neighbouring windows share (at most a quarter of a window)
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


def _encode_batches(tokenizer, batches, offsets: bool):
    """encode_batch of each batch; the lean Unigram tokenizer builds one model for several of them.
    Without `offsets`, encode_batch_fast: the same ids, no offsets (10,000 multilingual texts with
    `tokenizers`: 0.89-0.93x the time; BENCHMARKS.md, issue 18)."""
    if isinstance(tokenizer, UnigramTokenizer):
        return tokenizer.encode_batches(batches, offsets=offsets)
    encode = tokenizer.encode_batch if offsets else tokenizer.encode_batch_fast
    return (encode(batch) for batch in batches)


def _id_array(encoding) -> np.ndarray:
    """An encoding's ids as int64: the lean tokenizer's are one already (a tokenizers.Encoding makes
    a new list of them at each read)."""
    if isinstance(encoding, LeanEncoding):
        return encoding.id_array
    return np.asarray(encoding.ids, dtype=np.int64)


@dataclass
class Encoded:
    """Token id sequences for a list of texts; a chunked text owns several sequences."""

    sequences: list[np.ndarray]  # int64 ids, each at most max_length long
    owner: np.ndarray  # [n_sequences] index of the text each sequence belongs to
    truncated: list[int]  # indices of texts that were cut to max_length
    chunked: list[int]  # indices of texts split into several sequences
    keep: np.ndarray  # [n_sequences, 2]: positions [from, to) whose states belong to the text (windows overlap)


@dataclass
class Document:
    """A text's tokens split into their parts (for windows and late chunking)."""

    head: list[int]  # leading special tokens
    prefix: list[int]  # the task prefix's tokens, as tokenized in front of this text
    text: list[int]  # the text's own tokens
    tail: list[int]  # trailing special tokens
    spans: np.ndarray  # int64 [len(text), 2]: each text token's characters in the text, whitespace trimmed

    @property
    def lead(self) -> int:
        """Document position of the first text token."""
        return len(self.head) + len(self.prefix)


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
    def __init__(self, path: Path, max_length: int, chunk_overlap: int = CHUNK_OVERLAP, lean: Path | None = None):
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

    def document(self, encoding, prefix: str, text: str) -> Document:
        """Split an encoding of prefix + text. The prefix's tokens are those that start inside the
        prefix, as the tokenizer made them in front of this text: a prefix that tokenizes
        differently in context is still found, and every window can repeat it exactly."""
        head, content, tail = self._split(encoding)
        offsets = encoding.offsets[len(head) : len(head) + len(content)]
        prefix_end = len(prefix.rstrip())
        n_prefix = 0
        while n_prefix < len(content) and offsets[n_prefix][0] < prefix_end:
            n_prefix += 1
        spans = np.asarray(offsets[n_prefix:], dtype=np.int64).reshape(-1, 2) - len(prefix)
        spans = np.maximum(spans, 0)  # a token that takes the prefix's trailing space ("▁word")
        for row, (start, end) in enumerate(spans):
            while start < end and text[start].isspace():
                start += 1
            spans[row, 0] = start
        return Document(head, content[:n_prefix], content[n_prefix:], tail, spans)

    def encode_document(self, text: str, prefix: str) -> Document:
        """The whole of one text (never cut), split into its parts."""
        try:
            encoding = self.tokenizer.encode(prefix + text)
        except TypeError:
            raise InputError(_unencodable([text], 0)) from None
        return self.document(encoding, prefix, text)

    def prefix_ids(self, prefix: str) -> list[int]:
        if prefix not in self._prefix_ids:
            self._prefix_ids[prefix] = self._split(self.tokenizer.encode(prefix.rstrip()))[1] if prefix else []
        return self._prefix_ids[prefix]

    def _encodings(self, texts: list[str], prefix: str, whole: bool):
        """(index, tokenizers.Encoding, whether it covers only the text's head) for every text, made
        ENCODE_BLOCK texts at a time: an Encoding holds ~3 KB (tokens, offsets, masks), so encoding
        100k texts at once would hold 300 MB. Unless `whole`, a text far longer than max_length
        tokens is encoded from its head only, and without offsets (only chunking reads them)."""
        starts = range(0, len(texts), ENCODE_BLOCK)
        heads = [[text if whole else self._head(text) for text in texts[start : start + ENCODE_BLOCK]]
                 for start in starts]
        encoded = _encode_batches(self.tokenizer, ([prefix + text for text in block] for block in heads), offsets=whole)
        for start, block in zip(starts, heads):
            try:
                encodings = next(encoded)
            except TypeError:  # tokenizers' message names no text: find the one it could not take
                raise InputError(_unencodable(texts[start:], start)) from None
            for offset, (head, encoding) in enumerate(zip(block, encodings)):
                text = texts[start + offset]
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
        sequences, owner, truncated, chunked, keep = [], [], [], [], []
        for index, encoding, partial in self._encodings(texts, prefix, whole=truncation == "chunk"):
            ids = _id_array(encoding)
            if len(ids) <= self.max_length:
                sequences.append(ids)
                owner.append(index)
                continue
            if truncation == "error":
                raise TextTooLongError(
                    f"texts[{index}] has {'over ' if partial else ''}{len(ids)} tokens, more than the "
                    "model's max length "
                    f"{self.max_length}; shorten it, or pass truncation='truncate' or 'chunk' "
                    "(edge-embed embed: --truncation truncate|chunk)",
                    index, len(ids), self.max_length, at_least=partial,
                )
            if truncation == "truncate":
                head, content, tail = self._split(encoding)
                room = self.max_length - len(head) - len(tail)
                sequences.append(np.asarray(head + content[:room] + tail, dtype=np.int64))
                owner.append(index)
                truncated.append(index)
                continue
            # chunk: windows that each keep the special tokens and the task prefix; each token's state once
            document = self.document(encoding, prefix, texts[index])
            for window in split_windows(document.head, document.prefix, document.text, document.tail,
                                        self.max_length, self.chunk_overlap):
                sequences.append(window.ids)
                owner.append(index)
                keep.append((len(sequences) - 1, window.keep_from, window.keep_to))
            chunked.append(index)
        kept = np.asarray([(0, len(seq)) for seq in sequences], dtype=np.int64).reshape(-1, 2)
        for row, keep_from, keep_to in keep:
            kept[row] = keep_from, keep_to
        return Encoded(sequences, np.asarray(owner, dtype=np.int64), truncated, chunked, kept)
