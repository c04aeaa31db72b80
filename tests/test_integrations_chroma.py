"""The Chroma adapter with the real chromadb: an in-memory (EphemeralClient) collection over the real MiniLM bundle."""
from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
from docs_corpus import DOCUMENTS, QUESTIONS

from edge_embed import Embedder

pytest.importorskip("chromadb")
import chromadb  # noqa: E402
from chromadb.config import Settings  # noqa: E402

from edge_embed.integrations.chroma import EdgeEmbedEmbeddingFunction  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_network")  # Chroma's own default model would be a download


def client():
    return chromadb.EphemeralClient(Settings(anonymized_telemetry=False, allow_reset=True))


def test_an_in_memory_collection_query_returns_the_expected_document(minilm_bundle):
    function = EdgeEmbedEmbeddingFunction(minilm_bundle)
    collection = client().create_collection("docs", embedding_function=function)
    collection.add(ids=list(DOCUMENTS), documents=list(DOCUMENTS.values()))
    questions = list(QUESTIONS)
    found = collection.query(query_texts=questions, n_results=1)
    assert [ids[0] for ids in found["ids"]] == [QUESTIONS[q] for q in questions]
    assert collection.configuration["hnsw"]["space"] == "cosine"  # unit vectors: the function's default space


def test_documents_and_queries_get_their_prefixes(bundle):
    path = bundle("nomic-v15-tiny")
    model = Embedder(path, precision="fp32")
    function = EdgeEmbedEmbeddingFunction(path, precision="fp32", dim=64)
    documents, queries = function(["one text", "another"]), function.embed_query(["a question"])
    prefixes = model.manifest.prefixes
    np.testing.assert_allclose(np.stack(documents), model.embed([prefixes["search_document"] + t for t in
                                                                 ("one text", "another")], dim=64), atol=1e-6)
    np.testing.assert_allclose(np.stack(queries), model.embed([prefixes["search_query"] + "a question"], dim=64),
                               atol=1e-6)


def test_the_config_rebuilds_the_same_function(bundle, tmp_path):
    function = EdgeEmbedEmbeddingFunction(bundle("nomic-v15-tiny"), precision="fp32", dim=32, threads=1)
    config = function.get_config()
    assert config == {"bundle": str(bundle("nomic-v15-tiny")), "precision": "fp32", "dim": 32, "threads": 1}
    rebuilt = EdgeEmbedEmbeddingFunction.build_from_config(config)
    np.testing.assert_array_equal(np.stack(rebuilt(["same text"])), np.stack(function(["same text"])))
    # a persisted collection finds the function again by its registered name, with the same config
    settings = Settings(anonymized_telemetry=False)
    collection = chromadb.PersistentClient(str(tmp_path / "db"), settings).create_collection(
        "docs", embedding_function=function)
    reopened = chromadb.PersistentClient(str(tmp_path / "db"), settings).get_collection("docs")
    assert collection.name == reopened.name
    assert reopened.configuration["embedding_function"].get_config() == config


def test_without_chromadb_the_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "chromadb.api.types", None)
    monkeypatch.delitem(sys.modules, "edge_embed.integrations.chroma")
    with pytest.raises(ImportError, match=r"pip install 'edge-embed\[chroma\]'"):
        importlib.import_module("edge_embed.integrations.chroma")
