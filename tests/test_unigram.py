"""The lean Unigram tokenizer (edge_embed/unigram.py) against the tokenizers library: the same ids,
offsets and special-tokens mask for every text of the multilingual evaluation sets, the v2 fixture
texts and random Unicode; and how bundles carry it."""
from __future__ import annotations

import glob
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import texts as fixture_texts
from fixture_recipe import tokenizer_source
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from edge_embed import Embedder, piece_finder, unigram
from edge_embed.errors import BundleError, TruncationWarning
from edge_embed.manifest import MANIFEST_NAME
from edge_embed.unigram import LEAN_TOKENIZER_FILE, UnigramTokenizer
from export.lean_tokenizer import lean_tokenizer_data, write_lean_tokenizer

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
V2 = "nomic-v2moe-tiny"


@pytest.fixture(scope="module")
def lean_file(tmp_path_factory) -> Path:
    lean = tmp_path_factory.mktemp("lean") / LEAN_TOKENIZER_FILE
    assert write_lean_tokenizer(tokenizer_source(V2), lean)
    return lean


@pytest.fixture(scope="module")
def xlmr(lean_file) -> tuple[Tokenizer, UnigramTokenizer]:
    """The reference (tokenizers) and the lean tokenizer for XLM-R's tokenizer.json, its pieces found
    with the hash table (PieceFinder) whatever the batch."""
    lean = UnigramTokenizer.from_file(lean_file)
    lean._piece_finder()
    return Tokenizer.from_file(str(tokenizer_source(V2))), lean


@pytest.fixture(scope="module")
def xlmr_by_bisect(lean_file) -> tuple[Tokenizer, UnigramTokenizer]:
    """The same, as loaded: until a batch has more than BISECT_CHARS of words, pieces found by bisect
    (the tests give it no more, and check that it built no table)."""
    return Tokenizer.from_file(str(tokenizer_source(V2))), UnigramTokenizer.from_file(lean_file)


def differences(xlmr, texts: list[str]) -> list[tuple[str, object, object]]:
    reference, lean = xlmr
    found = []
    for text, want, got in zip(texts, reference.encode_batch(texts), lean.encode_batch(texts)):
        for field in ("ids", "offsets", "special_tokens_mask"):
            if getattr(want, field) != getattr(got, field):
                found.append((text, field, getattr(want, field), getattr(got, field)))
    return found


def evaluation_texts() -> list[str]:
    """Every text of xquad-retrieval (12 languages: passages, titles, the title + text the evaluation
    embeds, queries) and stsb-multi-mt (11 languages: both sentences of every pair)."""
    out = []
    for path in sorted(glob.glob(str(SHARED_DATA / "stsb-multi-mt" / "*" / "pairs.tsv"))):
        for line in Path(path).read_text(encoding="utf-8").split("\n")[1:]:
            if line:
                first, second, _ = line.split("\t")
                out += [first, second]
    for path in sorted(glob.glob(str(SHARED_DATA / "xquad-retrieval" / "*" / "*.jsonl"))):
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            out.append(record["text"])
            if record.get("title"):
                out += [record["title"], (record["title"] + " " + record["text"]).strip()]
    return out


@pytest.mark.skipif(not (SHARED_DATA / "xquad-retrieval").is_dir(), reason="needs ../shared/data")
def test_same_tokens_as_tokenizers_on_every_evaluation_text(xlmr):
    texts = evaluation_texts()
    languages = {Path(p).parent.name for p in glob.glob(str(SHARED_DATA / "*" / "*" / "*.*"))}
    assert len(texts) > 45_000 and {"ar", "zh", "ja", "th", "hi", "el", "ru"} <= languages
    assert differences(xlmr, texts) == []


def test_same_tokens_on_the_v2_fixture_texts_and_edge_cases(xlmr, xlmr_by_bisect):
    cases = [
        *fixture_texts(V2),
        "", " ", "   ", "x  ", "  lead", "a\tb\n\nc", "Hello  world", "\u3000全角\u3000スペース",
        "a <mask> b", "a<s>b", "<s></s><pad><unk><mask>", "＜s＞ fullwidth special", "ﬁne día",
        "\ufeff\u200f\u200fفي الماضي", "e\u0301\u0323 combining", "🙂🙃 emoji 👩‍👩‍👧", "\x00\x1f control",
        "unknown \U000e0041\U000e0042 tags", "x" * 600, "ก" * 300,
    ]
    assert differences(xlmr, cases) == []
    _, lean = xlmr_by_bisect
    small = [text for text in cases if len(lean._words([text])) <= unigram.BISECT_CHARS]
    assert len(small) == len(cases) - 1  # all but "x" * 600
    assert [found for text in small for found in differences(xlmr_by_bisect, [text])] == []
    assert lean._finder is None  # each was found by bisect
    # with the table built: bisect for a few new words, the table for more ("ก" * 300 is one word of 301)
    assert [found for text in small for found in differences(xlmr, [text])] == []


PIECES = ["<s>", "</s>", "<pad>", "<unk>", "<mask>", " ", "  ", "\u3000", "\t", "\n", "▁", "\u200b", "ﬁ", "Ａ"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(max_size=12), st.sampled_from(PIECES),
                          st.text(alphabet=st.characters(codec="utf-8"), max_size=8)), max_size=6))
def test_same_tokens_on_random_unicode(xlmr, xlmr_by_bisect, parts):
    assert differences(xlmr, ["".join(parts)]) == []
    assert differences(xlmr_by_bisect, ["".join(parts)]) == []
    assert xlmr_by_bisect[1]._finder is None


def _pieces_in(text: str, pieces: set[str], longest: int) -> set[str]:
    """Brute force: every substring of up to `longest` characters that is a piece."""
    return {text[i:j] for i in range(len(text)) for j in range(i + 1, min(len(text), i + longest) + 1)} & pieces


def test_the_piece_finder_finds_every_piece_a_text_holds(xlmr, monkeypatch):
    _, lean = xlmr
    finder, pieces = lean._piece_finder(), lean._sorted
    vocabulary = set(pieces)
    text = "\n".join(["▁" + word for text in fixture_texts(V2) for word in text.split()]
                     + ["▁🙂🙃", "▁\U000e0041x", "ﬁne", "▁" + "ก" * 40, "▁" + "x" * 30])
    monkeypatch.setattr(piece_finder, "CHUNK_CHARS", 64)  # many chunks: a piece across a chunk's end is found too
    found = {pieces[i] for i in np.flatnonzero(finder.find(text))}
    expected = _pieces_in(text, vocabulary, finder.longest)
    assert len(expected) > 500 and any(len(piece) > 8 for piece in expected)
    assert expected <= found and len(found - expected) <= 2  # more only where a hash collides
    assert [pieces[i] for i in piece_finder.find_by_bisect(pieces, text, finder.longest)] == sorted(expected)
    few = sorted(["a", "ab", "abc", "🙂", "x🙂y", "▁ab", "é"])  # and characters outside the BMP
    hits = piece_finder.PieceFinder(few).find("▁abx🙂y\nzé")
    assert {piece for piece, hit in zip(few, hits) if hit} == {"a", "ab", "▁ab", "🙂", "x🙂y", "é"}


@pytest.mark.parametrize("pipeline_texts", [1, 10**9], ids=["pipelined", "serial"])
def test_batches_grouped_and_split_by_script_give_tokenizers_tokens(xlmr, monkeypatch, pipeline_texts):
    reference, lean = xlmr
    monkeypatch.setattr(unigram, "GROUP_TEXTS", 40)  # several groups, each with several scripts' models
    monkeypatch.setattr(unigram, "MIN_CLUSTER", 4)
    monkeypatch.setattr(unigram, "PIPELINE_TEXTS", pipeline_texts)  # models built while the last one runs, or not
    texts = [f"{text} {i}" for i in range(4) for text in fixture_texts(V2)]
    texts += ["Ελληνικά κείμενα", "Русский текст <mask>", "ภาษาไทย", "中文文本", "✓ rare block", ""]
    batches = [texts[start : start + 17] for start in range(0, len(texts), 17)]
    assert len(unigram._clusters(texts)) >= 4
    for special, offsets in [(True, True), (False, True), (True, False)]:
        got = list(lean.encode_batches(batches, add_special_tokens=special, offsets=offsets))
        assert [len(batch) for batch in got] == [len(batch) for batch in batches]
        encode = reference.encode_batch if offsets else reference.encode_batch_fast  # fast: offsets all (0, 0)
        for batch, encodings in zip(batches, got):
            for want, have in zip(encode(batch, add_special_tokens=special), encodings):
                assert (have.ids, have.offsets, have.special_tokens_mask, have.tokens) == (
                    want.ids, want.offsets, want.special_tokens_mask, want.tokens)
                assert have.id_array.dtype == np.int64 and have.id_array.tolist() == want.ids
    assert lean.encode("a <s> b", add_special_tokens=False).ids == reference.encode("a <s> b",
                                                                                    add_special_tokens=False).ids


def test_short_calls_remember_each_words_pieces_within_a_bound(xlmr, lean_file, monkeypatch):
    reference, _ = xlmr
    lean = UnigramTokenizer.from_file(lean_file)  # nothing remembered yet
    monkeypatch.setattr(unigram, "CACHED_WORDS", 8)
    texts = [f"{text} {i}" for i in range(3) for text in fixture_texts(V2)]
    for text in texts + texts:  # the second time partly from remembered words
        assert (lean.encode(text).ids, lean.encode(text).offsets) == (reference.encode(text).ids,
                                                                       reference.encode(text).offsets)
        assert 0 < len(lean._pieces_of_word) <= 8


def test_threads_sharing_one_lean_tokenizer_get_tokenizers_tokens(xlmr, lean_file):
    reference, _ = xlmr
    lean = UnigramTokenizer.from_file(lean_file)  # no hash table yet: the large batches race to build it
    texts = [f"{text} {i}" for i in range(120) for text in fixture_texts(V2)]
    jobs = [texts[i::4] for i in range(4)] + [[text] for text in texts[:28]]  # large and one-text batches
    assert max(len(lean._words(job)) for job in jobs) > unigram.BISECT_CHARS
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda job: [encoding.ids for encoding in lean.encode_batch(job)], jobs))
    assert got == [[encoding.ids for encoding in reference.encode_batch(job)] for job in jobs]
    assert lean._finder is not None


def test_texts_cluster_by_the_block_of_their_highest_character(monkeypatch):
    monkeypatch.setattr(unigram, "MIN_CLUSTER", 2)
    texts = ["", "abc", "жук", "x" * 300 + "ж", "дом", "中文", "zz", "é"]  # a text's head is its first 256 characters
    assert unigram._clusters(texts) == [[0, 1, 3, 6, 7], [2, 4], [5]]
    monkeypatch.setattr(unigram, "MIN_CLUSTER", 3)  # smaller blocks go together, in text order
    assert unigram._clusters(texts) == [[0, 1, 3, 6, 7], [2, 4, 5]]
    assert unigram._clusters([]) == [] and unigram._clusters([""]) == [[0]]


def test_an_invalid_text_is_a_type_error_as_in_tokenizers(xlmr):
    reference, lean = xlmr
    for bad in ("bad \ud800 surrogate", 3):
        with pytest.raises(TypeError):
            reference.encode_batch([bad])
        with pytest.raises(TypeError):
            lean.encode_batch([bad])


def test_only_unigram_metaspace_tokenizers_get_a_lean_file(tmp_path):
    assert lean_tokenizer_data(tokenizer_source("nomic-v15-tiny")) is None  # WordPiece: tokenizer.json only
    data = json.loads(tokenizer_source(V2).read_text(encoding="utf-8"))
    data["model"]["byte_fallback"] = True
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert lean_tokenizer_data(path) is None


def test_v2_bundle_carries_the_lean_tokenizer_and_embeds_as_with_tokenizer_json(bundle, tmp_path):
    source = bundle(V2)
    manifest = json.loads((source / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert manifest["tokenizer"] == {"source": "tokenizer.json",
                                     "runtime": {"kind": "unigram", "file": LEAN_TOKENIZER_FILE}}
    assert LEAN_TOKENIZER_FILE in manifest["files"]
    lean = Embedder(source, precision="fp32")
    assert isinstance(lean.tokenizer.tokenizer, UnigramTokenizer)
    # An older bundle, without the lean file: tokenizer.json through the tokenizers library.
    old = tmp_path / "old"
    shutil.copytree(source, old)
    del manifest["tokenizer"], manifest["files"][LEAN_TOKENIZER_FILE]
    (old / LEAN_TOKENIZER_FILE).unlink()
    (old / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    plain = Embedder(old, precision="fp32")
    assert isinstance(plain.tokenizer.tokenizer, Tokenizer)
    texts = [*fixture_texts(V2), "mixed <mask> special and  spaces"]
    for task in (None, "search_query"):
        np.testing.assert_array_equal(lean.embed(texts, task=task), plain.embed(texts, task=task))
    long_text = " ".join(fixture_texts(V2)) * 40
    with pytest.warns(TruncationWarning):
        np.testing.assert_array_equal(lean.embed([long_text]), plain.embed([long_text]))
    np.testing.assert_array_equal(lean.embed([long_text], truncation="chunk"),
                                  plain.embed([long_text], truncation="chunk"))


def test_a_damaged_or_misplaced_lean_tokenizer_is_a_bundle_error(copy_bundle):
    target = copy_bundle(V2)
    with open(target / LEAN_TOKENIZER_FILE, "a", encoding="utf-8") as fh:
        fh.write(" ")
    with pytest.raises(BundleError, match=f"checksum mismatch for .*{LEAN_TOKENIZER_FILE}"):
        Embedder(target, precision="fp32")
    manifest = json.loads((target / MANIFEST_NAME).read_text(encoding="utf-8"))
    manifest["tokenizer"]["runtime"]["file"] = "../tokenizer.unigram.json"
    (target / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(BundleError, match="runtime tokenizer names the file .* leaves the bundle directory"):
        Embedder(target, precision="fp32", verify=False)
