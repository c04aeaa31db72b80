"""The LlamaIndex adapter with the real llama-index-core: a VectorStoreIndex query over the real MiniLM bundle,
with the network shut (no OpenAI default, nothing downloaded)."""
from __future__ import annotations

import asyncio
import importlib
import sys

import numpy as np
import pytest
from docs_corpus import DOCUMENTS, QUESTIONS

from edge_embed import Embedder

pytest.importorskip("llama_index.core")
from llama_index.core import Document, Settings, VectorStoreIndex  # noqa: E402
from llama_index.core.llms import MockLLM  # noqa: E402

from edge_embed.integrations.llama_index import EdgeEmbedEmbedding  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_network")  # an OpenAI default or a download would fail the test


def test_a_vector_store_index_query_returns_the_expected_document(minilm_bundle, monkeypatch):
    embed_model = EdgeEmbedEmbedding(minilm_bundle)
    # Settings' own slots (its properties would resolve OpenAI defaults on first read): nothing falls back to them
    monkeypatch.setattr(Settings, "_embed_model", embed_model)
    monkeypatch.setattr(Settings, "_llm", MockLLM())
    documents = [Document(text=text, metadata={"name": name}) for name, text in DOCUMENTS.items()]
    index = VectorStoreIndex.from_documents(documents, embed_model=embed_model)
    engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=1, response_mode="no_text")
    for question, name in QUESTIONS.items():
        assert engine.query(question).source_nodes[0].node.metadata["name"] == name, question


def test_batches_and_async_variants_match_the_runtime_with_prefixes(bundle):
    path = bundle("nomic-v15-tiny")
    model = Embedder(path, precision="fp32")  # int8 rows move a little with their batch-mates
    embedding = EdgeEmbedEmbedding(path, precision="fp32", dim=48, embed_batch_size=3)
    texts = [f"document number {i} " + "word " * i for i in range(7)]
    documents = embedding.get_text_embedding_batch(texts)  # 3 + 3 + 1 texts through _get_text_embeddings
    expected = model.embed([model.manifest.prefixes["search_document"] + t for t in texts], dim=48)
    np.testing.assert_allclose(documents, expected, atol=1e-6)
    query = model.embed([model.manifest.prefixes["search_query"] + "a question"], dim=48)[0]
    np.testing.assert_allclose(embedding.get_query_embedding("a question"), query, atol=1e-6)

    async def run_async():
        return (await embedding.aget_query_embedding("a question"),
                await embedding.aget_text_embedding_batch(texts))

    async_query, async_documents = asyncio.run(run_async())
    np.testing.assert_allclose(async_query, query, atol=1e-6)
    np.testing.assert_allclose(async_documents, expected, atol=1e-6)


def test_the_session_is_private_and_the_fields_serialise(bundle):
    embedding = EdgeEmbedEmbedding(bundle("nomic-v15-tiny"), precision="fp32", dim=32, threads=1)
    fields = embedding.to_dict()
    assert fields["bundle"] == str(bundle("nomic-v15-tiny")) and fields["dim"] == 32 and fields["threads"] == 1
    assert fields["class_name"] == "EdgeEmbedEmbedding" and "_embedder" not in fields


def test_without_llama_index_the_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_index.core.base.embeddings.base", None)
    monkeypatch.delitem(sys.modules, "edge_embed.integrations.llama_index")
    with pytest.raises(ImportError, match=r"pip install 'edge-embed\[llama-index\]'"):
        importlib.import_module("edge_embed.integrations.llama_index")
