"""Bad input to Embedder.embed gets a clear InputError, never a deep ORT traceback."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tokenizers

from edge_embed import Embedder, InputError

V15, V2 = "nomic-v15-tiny", "nomic-v2moe-tiny"


@pytest.fixture(scope="module")
def v15(bundle):
    return Embedder(bundle(V15), precision="fp32")


def test_empty_list_returns_an_empty_array(v15):
    out = v15.embed([], dim=32)
    assert out.shape == (0, 32) and out.dtype == np.float32
    packed = v15.embed([], dim=32, binary=True)
    assert packed.shape == (0, 4) and packed.dtype == np.uint8


@pytest.mark.parametrize("texts, message", [
    (["ok", ""], r"texts\[1\] is empty"),
    (["ok", "   "], r"texts\[1\] is empty"),
    (["ok", 3], r"texts\[1\] is a int, not a string"),
    (["ok", None], r"texts\[1\] is a NoneType"),
    ("a single string", r"wrap a single text as \[text\]"),
    (42, r"texts must be a list of strings"),
    ({"a": 1}, r"not a dict; pass list\(...\)"),
    ({"a", "b"}, r"not a set"),
    (["ok", "abc\ud800def"], r"texts\[1\] is not valid Unicode \(surrogates not allowed at character 3\)"),
])
def test_bad_texts(v15, texts, message):
    with pytest.raises(InputError, match=message):
        v15.embed(texts)


def test_unknown_task_lists_the_known_ones(v15):
    with pytest.raises(InputError, match=r"unknown task 'search'.*search_document"):
        v15.embed(["hi"], task="search")


def test_v2_prompt_names_are_aliases(bundle):
    model = Embedder(bundle(V2), precision="fp32")
    np.testing.assert_array_equal(model.embed(["hola"], task="query"), model.embed(["hola"], task="search_query"))
    np.testing.assert_array_equal(model.embed(["hola"], task="passage"),
                                  model.embed(["hola"], task="search_document"))


@pytest.mark.parametrize("dim", [0, 4, 65, 1000, 32.0, "64", True])
def test_dim_out_of_range_for_v15(v15, dim):
    # tiny v1.5 has n_embd 64: dims 6..64 (n_embd / 12 .. n_embd, like 64..768 for the real model)
    with pytest.raises(InputError, match=r"dim must be an int from 6 to 64"):
        v15.embed(["hi"], dim=dim)


def test_v2_dim_range_is_a_third_to_full(bundle):
    model = Embedder(bundle(V2), precision="fp32")
    assert model.dims == (11, 32)
    with pytest.raises(InputError, match=r"from 11 to 32"):
        model.embed(["hi"], dim=10)


def test_binary_dim_must_be_a_multiple_of_8(v15):
    with pytest.raises(InputError, match="multiple of 8"):
        v15.embed(["hi"], dim=20, binary=True)


def test_binary_packs_the_sign_bits_of_the_float_embedding(v15):
    texts = ["first text", "a second, longer text about something else"]
    floats = v15.embed(texts, task="search_document", dim=48)
    packed = v15.embed(texts, task="search_document", dim=48, binary=True)
    assert packed.shape == (2, 6) and packed.dtype == np.uint8
    np.testing.assert_array_equal(np.unpackbits(packed, axis=1).astype(bool), floats > 0)


def _model_card_recipe(bundle_dir, text: str, dim: int) -> np.ndarray:
    """The v1.5 model card's recipe worked out here from the model's own token states (the ONNX file
    run alone, one text, no padding): mean over tokens, layer_norm, truncate, L2."""
    tok = tokenizers.Tokenizer.from_file(str(bundle_dir / "tokenizer.json"))
    tok.no_padding()
    ids = np.array([tok.encode(text).ids], dtype=np.int64)
    session = ort.InferenceSession(str(bundle_dir / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
    states = session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0]
    pooled = states.astype(np.float64).mean(axis=0)
    normed = (pooled - pooled.mean()) / np.sqrt(pooled.var() + 1e-5)
    return normed[:dim] / np.linalg.norm(normed[:dim])


def test_matryoshka_follows_the_model_card_from_the_token_states(bundle, v15):
    texts = ["alpha beta", "gamma delta epsilon and a longer second text"]  # batched together: padding
    for dim in (64, 16):
        got = v15.embed(texts, dim=dim)
        assert got.shape == (2, dim)
        want = np.stack([_model_card_recipe(bundle(V15), text, dim) for text in texts])
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_prefix_changes_the_embedding(v15):
    raw = v15.embed(["what is rotary embedding"])
    query = v15.embed(["what is rotary embedding"], task="search_query")
    literal = v15.embed(["search_query: what is rotary embedding"])
    assert np.abs(raw - query).max() > 1e-3
    np.testing.assert_allclose(query, literal, atol=1e-6)


def test_unknown_precision_and_missing_provider(bundle):
    with pytest.raises(InputError, match="precision must be one of"):
        Embedder(bundle(V15), precision="int4")
    with pytest.raises(InputError, match="not available"):
        Embedder(bundle(V15), providers=["CUDAExecutionProvider"])
    with pytest.raises(InputError, match="no fp16 model"):
        Embedder(bundle(V15), precision="fp16")


def test_max_length_option_is_checked(bundle):
    with pytest.raises(InputError, match="max_length must be an int from 8 to 8192"):
        Embedder(bundle(V15), max_length=9000)


@pytest.mark.parametrize("kwargs, message", [
    ({"threads": "2"}, "threads must be a positive int or None"),
    ({"threads": -3}, "threads must be a positive int or None"),
    ({"batch_limits": {"max_tokens": 512}}, "batch_limits must be an edge_embed.BatchLimits"),
])
def test_bad_constructor_arguments(bundle, kwargs, message):
    with pytest.raises(InputError, match=message):
        Embedder(bundle(V15), **kwargs)


def test_numpy_ints_are_ints(bundle):
    model = Embedder(bundle(V15), threads=np.int64(1), max_length=np.int64(32))
    assert model.max_length == 32 and model.embed(["numpy"], dim=np.int64(16)).shape == (1, 16)


def test_bundle_must_be_a_path():
    with pytest.raises(InputError, match="bundle must be a directory path"):
        Embedder(None)


def test_batch_limits_are_checked_where_they_are_made():
    from edge_embed import BatchLimits

    with pytest.raises(InputError, match="BatchLimits.max_batch_size must be an int >= 1, not 0"):
        BatchLimits(max_batch_size=0)
    with pytest.raises(InputError, match="batch_cost must be an int >= 0"):
        BatchLimits(batch_cost=-1)
    limits = BatchLimits(max_tokens=np.int64(4096))
    assert limits.max_tokens == 4096 and type(limits.max_tokens) is int


def test_binary_must_be_a_bool(v15):
    with pytest.raises(InputError, match="binary must be True or False, not 'yes'"):
        v15.embed(["hi"], binary="yes")


def test_non_finite_model_output_is_an_error_not_a_vector(bundle, tmp_path):
    """A model that overflows (fp16 on a GPU, a damaged export) must not return NaN embeddings."""
    from edge_embed import EdgeEmbedError

    model = Embedder(bundle(V15), precision="fp32")
    run = model._run
    longest = lambda mask: mask.sum(axis=1, keepdims=True) == mask.sum(axis=1).max()  # noqa: E731
    model._run = lambda ids, mask: run(ids, mask) * np.where(longest(mask), np.nan, 1.0)[:, :, None]
    with pytest.raises(EdgeEmbedError, match=r"fp32 model gave NaN or infinite states for 1 of 2 texts "
                                             r"\(first: texts\[1\]\); re-export the bundle"):
        model.embed(["zebra", "a different first word"])


def test_progress_is_quiet_by_default_even_on_a_terminal(v15, monkeypatch):
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    v15.embed(["a short query"] * 20)
    assert screen.getvalue() == ""  # a few hundred tokens: no bar
    v15.embed(["a short query"] * 20, progress=True)
    assert "embedding (tokens) [" in screen.getvalue() and "100/100 100%" in screen.getvalue()  # 20 x 5 tokens
    with pytest.raises(InputError, match="progress must be True, False or None"):
        v15.embed(["x"], progress="yes")
