"""Benchmark texts: real English prose cut to realistic lengths, counted with the model's tokenizer.

The prose is the Python documentation that ships with CPython (pydoc_data.topics): thousands
of ordinary English sentences with the odd identifier in them, so WordPiece and Unigram
tokenizers see what they see in practice (about 1.3 tokens per word), not synthetic words.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

from edge_embed.errors import EdgeEmbedError


@dataclass(frozen=True)
class Workload:
    name: str
    target: int  # tokens per text, special tokens included
    texts: int  # texts per measurement (full run)
    quick_texts: int
    rounds: int  # alternating rounds (full run)
    quick_rounds: int
    long: bool = False  # long-document workload (v1.5 only)
    fresh_process: bool = False  # timed in the fresh processes that measure its peak RSS

    def count(self, quick: bool) -> int:
        return self.quick_texts if quick else self.texts

    def n_rounds(self, quick: bool) -> int:
        return self.quick_rounds if quick else self.rounds


WORKLOADS = [
    Workload("short-32", 32, 96, 16, 7, 2),
    Workload("para-128", 128, 24, 4, 7, 2),
    Workload("chunk-512", 512, 6, 1, 7, 2),
    # long documents (v1.5 only). One 8192-token text is embedded in a fresh process per system,
    # which measures its peak RSS and its time (edge-int8 only in quick mode).
    Workload("long-2048", 2048, 2, 0, 3, 0, long=True),
    Workload("long-8192", 8192, 1, 1, 1, 1, long=True, fresh_process=True),
]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_ALLOWED = re.compile(r"^[A-Z][\x20-\x7e]+[.!?]$")


def sentences() -> list[str]:
    """Plain English sentences from CPython's bundled documentation, deduplicated, in a fixed order."""
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # some Linux distributions package it apart from python3
        raise EdgeEmbedError("the benchmark texts come from CPython's pydoc_data module, which this Python "
                             "lacks; install your distribution's full Python standard library") from exc

    seen: set[str] = set()
    out: list[str] = []
    for key in sorted(topics):
        text = re.sub(r"\s+", " ", topics[key])
        for sentence in _SENTENCE_END.split(text):
            sentence = sentence.strip()
            words = sentence.split()
            letters = sum(c.isalpha() or c == " " for c in sentence)
            plain = _ALLOWED.match(sentence) and letters >= 0.85 * len(sentence)
            if 6 <= len(words) <= 60 and plain and sentence not in seen:
                seen.add(sentence)
                out.append(sentence)
    return out


class TextMaker:
    """Builds texts of about N tokens from consecutive sentences at random starting points."""

    def __init__(self, tokenizer, seed: int = 0):
        tokenizer.no_truncation()  # count every token (tokenizer.json files may carry a max length)
        tokenizer.no_padding()
        self.tokenizer = tokenizer  # tokenizers.Tokenizer, special tokens added by encode
        self.sentences = sentences()
        encodings = tokenizer.encode_batch(self.sentences, add_special_tokens=False)
        self.lengths = np.array([len(e.ids) for e in encodings])
        self.specials = len(tokenizer.encode("a").ids) - len(tokenizer.encode("a", add_special_tokens=False).ids)
        self.rng = np.random.default_rng(seed)

    @classmethod
    def seeded(cls, tokenizer, *names: str) -> TextMaker:
        """A maker whose texts are fixed by NAMES (model key, workload): every script that names the
        same ones draws the same texts."""
        return cls(tokenizer, seed=zlib.crc32("/".join(names).encode()))

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text).ids)

    def text(self, target: int, limit: int) -> str:
        """A text of about `target` tokens (specials included, never more than `limit`):
        consecutive sentences from a random start, the last one cut at a word boundary."""
        target = min(target, limit)
        n = len(self.sentences)
        i = int(self.rng.integers(n))
        picked: list[str] = []
        total = self.specials
        while total < target * 1.05 + 8:  # a little over, then cut
            picked.append(self.sentences[i % n])
            total += int(self.lengths[i % n]) + 1
            i += 1
        text = " ".join(picked)
        content = target - self.specials
        while True:
            encoding = self.tokenizer.encode(text, add_special_tokens=False)
            if len(encoding.ids) <= content:
                return text
            cut = encoding.offsets[content][0]  # first character of the first token too many
            space = text.rfind(" ", 0, cut + 1)
            text = text[: space if space > 0 else cut].rstrip()

    def texts(self, workload: Workload, n: int, limit: int) -> list[str]:
        target = min(workload.target, limit)
        if workload.long:
            return [self.text(target, limit) for _ in range(n)]
        # +-25 % spread around the target, like real short texts and paragraphs
        targets = np.clip(self.rng.normal(target, 0.12 * target, n).round(), target * 0.75, target * 1.25)
        return [self.text(int(min(t, limit)), limit) for t in targets]
