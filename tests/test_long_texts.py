"""Texts longer than the max length: truncated with a visible count, rejected, or chunked."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from token_states import v15_recipe, whole_document_states
from tokenizers import Tokenizer

from edge_embed import Embedder, InputError, TextTooLongError, TruncationWarning

NAME = "nomic-v15-tiny"
LONG = " ".join(f"token{i % 50} is here" for i in range(40))  # ~200 tokens


@pytest.fixture(scope="module")
def short_model(bundle):
    return Embedder(bundle(NAME), precision="fp32", max_length=48)


def test_truncate_warns_with_the_count_and_keeps_the_head_and_the_closing_token(bundle, short_model):
    with pytest.warns(TruncationWarning, match=r"1 of 2 texts were longer than 48 tokens"):
        out = short_model.embed(["short", LONG], dim=64)
    # Worked out here: [CLS] + the first 46 content tokens + [SEP], through the model alone, mean, recipe.
    import onnxruntime as ort
    import tokenizers

    tok = tokenizers.Tokenizer.from_file(str(bundle(NAME) / "tokenizer.json"))
    ids = tok.encode(LONG).ids
    assert len(ids) > 48
    kept = np.array([ids[:47] + ids[-1:]], dtype=np.int64)
    session = ort.InferenceSession(str(bundle(NAME) / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
    pooled = session.run(["last_hidden_state"], {"input_ids": kept, "attention_mask": np.ones_like(kept)})[0][0]
    pooled = pooled.astype(np.float64).mean(axis=0)
    normed = (pooled - pooled.mean()) / np.sqrt(pooled.var() + 1e-5)
    np.testing.assert_allclose(out[1], normed / np.linalg.norm(normed), atol=1e-5)


def test_error_mode_rejects_long_texts(short_model):
    with pytest.raises(InputError, match=r"texts\[1\] has \d+ tokens, more than the model's max length 48") as caught:
        short_model.embed(["short", LONG], truncation="error")
    assert isinstance(caught.value, TextTooLongError)  # which text, and by how much, for callers (the server's 4xx)
    assert (caught.value.index, caught.value.max_length) == (1, 48) and caught.value.tokens > 48


def test_chunk_mode_averages_each_token_of_the_text_once(bundle, short_model):
    """Windows built by hand in tests/token_states.py; the expected vector is the plain mean of the
    states they give, one per token of the whole text."""
    tokenizer = Tokenizer.from_file(str(bundle(NAME) / "tokenizer.json"))
    prefix = "search_document: "
    ids = tokenizer.encode(prefix + LONG).ids
    lead = len(tokenizer.encode(prefix).ids) - 1  # [CLS] + the prefix
    whole, windows = whole_document_states(bundle(NAME), ids, lead, 48)
    assert len(windows) >= 4 and len(whole) == len(ids)  # one state per token of the text, each once
    want = v15_recipe(whole.mean(axis=0), 64)[0]
    got = short_model.embed([LONG], task="search_document", truncation="chunk")[0]
    assert np.abs(got - want).max() <= 1e-5
    # what chunk mode did before (each window's mean, weighted by its length) is measurably different
    means = np.stack([w.mean(axis=0) for w in windows])
    lengths = np.array([len(w) for w in windows], dtype=np.float64)
    old = v15_recipe((means * lengths[:, None]).sum(axis=0) / lengths.sum(), 64)[0]
    assert np.abs(old - want).max() > 1e-3


def test_every_window_repeats_the_prefix_as_tokenized_in_context(bundle):
    """"search_doc" + "uments ..." tokenizes as search _ documents ...: the prefix alone (search _ doc)
    is not a prefix of the text's tokens, yet every window must start with the same lead tokens."""
    model = Embedder(bundle(NAME), precision="fp32", max_length=24)
    encoded = model.tokenizer.encode(["uments " + LONG], "search_doc", "chunk")
    in_context = model.tokenizer.tokenizer.encode("search_doc" + "uments " + LONG).ids[:4]
    assert len(encoded.sequences) > 3
    assert all(seq[:4].tolist() == in_context for seq in encoded.sequences)


def test_texts_within_the_limit_are_untouched_by_chunk_mode(short_model):
    np.testing.assert_array_equal(
        short_model.embed(["short one"], truncation="chunk"), short_model.embed(["short one"])
    )


def test_chunked_and_whole_texts_in_one_call_match_their_own_results(short_model):
    mixed = short_model.embed(["short one", LONG, "another short text"], truncation="chunk")
    np.testing.assert_allclose(mixed[[0, 2]], short_model.embed(["short one", "another short text"]), atol=1e-6)
    np.testing.assert_allclose(mixed[1], short_model.embed([LONG], truncation="chunk")[0], atol=1e-6)


def test_unknown_truncation_mode(short_model):
    with pytest.raises(InputError, match="truncation must be one of"):
        short_model.embed(["x"], truncation="drop")


_RSS_AFTER_ONE_LONG_TEXT = r"""
import sys, warnings
from edge_embed import Embedder
from edge_embed.measure import peak_rss_mb, rss_mb
model = Embedder(sys.argv[1], precision="int8", providers="cpu", threads=2)
model.embed(["a short text", "and another one"] * 8)  # the arena at the size of ordinary batches
before = rss_mb()
model.embed([" ".join(f"word{i % 97} and more" for i in range(2600))], truncation="chunk")  # 8192 + 8
print(before, rss_mb(), peak_rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux: reads /proc/self/status")
def test_a_text_longer_than_the_batch_budget_leaves_no_arena_behind(bundle):
    # onnxruntime's arena keeps its largest buffers; without the shrinking run the process would
    # stay at its peak (measured: +46 MB of a 46 MB spike; with it +10 MB of 42 MB).
    result = subprocess.run([sys.executable, "-c", _RSS_AFTER_ONE_LONG_TEXT, str(bundle(NAME))],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    before, after, peak = (float(x) for x in result.stdout.split())
    assert peak - before > 20  # the long text did need the memory
    assert after - before < 0.5 * (peak - before)


@pytest.mark.parametrize("name", [NAME, "nomic-v2moe-tiny"])
def test_a_huge_text_is_cut_from_its_head_with_the_tokens_of_the_whole(bundle, name):
    """Truncation keeps max_length tokens; tokenizing only the head gives exactly those tokens."""
    model = Embedder(bundle(name), precision="fp32", max_length=48)
    tokenizer = model.tokenizer.tokenizer
    words = " ".join(f"wörd{i % 97} naïve, 東京 text" for i in range(3000))  # ~90k characters
    spaced = "start" + " " * 5000 + words  # whitespace makes no tokens: the head alone is too short
    for text in (words, spaced):
        prefix = model.prefix("search_document")
        got = model.tokenizer.encode([text], prefix, "truncate").sequences[0].tolist()
        full = tokenizer.encode(prefix + text).ids
        assert len(full) > 5000 and got[:-1] == full[:47] and got[-1] == full[-1]
    # the head ends near a form feed, which BERT's normalizer deletes (joining the words around it)
    model = Embedder(bundle(name), precision="fp32", max_length=64)
    text = "w " * 40 + " " * (2048 - 80) + "ab" * 30 + "\f" + "cd" * 30 + " tail" * 100
    full = model.tokenizer.tokenizer.encode(text).ids
    got = model.tokenizer.encode([text], "", "truncate").sequences[0].tolist()
    assert got[:-1] == full[:63] and got[-1] == full[-1]
    with pytest.raises(InputError, match=r"texts\[0\] has over \d+ tokens, more than the model's max length 64"):
        model.embed([words], truncation="error")


def test_small_windows_still_cover_the_whole_text(bundle):
    """With max_length 12 the window (12 - 2 specials - 4 prefix tokens) leaves room for 6 text tokens."""
    model = Embedder(bundle(NAME), precision="fp32", max_length=12)
    prefix = model.prefix("search_document")
    text = "alpha " * 20 + "cat dog house tree river"
    encoded = model.tokenizer.encode([text], prefix, "chunk")
    kept = len(model.tokenizer.prefix_ids(prefix))
    body = model.tokenizer.tokenizer.encode(text).ids[1:-1]
    last = encoded.sequences[-1][1 + kept : -1].tolist()
    assert len(encoded.sequences) >= 5 and body[-len(last):] == last  # the last window ends where the text does
    a, b = model.embed([text, text.replace("river", "ocean")], task="search_document", truncation="chunk")
    assert np.abs(a - b).max() > 1e-4  # the last word reaches the model
