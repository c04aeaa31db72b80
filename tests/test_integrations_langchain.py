"""The LangChain adapter with the real langchain-core: an InMemoryVectorStore over the real MiniLM bundle."""
from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
from docs_corpus import DOCUMENTS, QUESTIONS

from edge_embed import Embedder

pytest.importorskip("langchain_core")
from langchain_core.documents import Document  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402

from edge_embed.integrations.langchain import EdgeEmbedEmbeddings  # noqa: E402


def test_an_in_memory_vector_store_finds_the_expected_document(minilm_bundle):
    store = InMemoryVectorStore(EdgeEmbedEmbeddings(minilm_bundle))
    store.add_documents([Document(page_content=text, metadata={"name": name}) for name, text in DOCUMENTS.items()])
    for question, name in QUESTIONS.items():
        assert store.similarity_search(question, k=1)[0].metadata["name"] == name, question


def test_queries_and_documents_get_their_prefixes_and_dim(bundle):
    path = bundle("nomic-v15-tiny")
    model = Embedder(path, precision="fp32")  # int8 rows move a little with their batch-mates
    embeddings = EdgeEmbedEmbeddings(path, precision="fp32", dim=32)
    query, documents = embeddings.embed_query("what is late chunking?"), embeddings.embed_documents(["a", "b c"])
    assert len(query) == 32 and [len(row) for row in documents] == [32, 32]
    # the expected vectors: the manifest's prefix strings written by hand, no task given to the runtime
    np.testing.assert_allclose(query, model.embed([model.manifest.prefixes["search_query"] + "what is late chunking?"],
                                                  dim=32)[0], atol=1e-6)
    np.testing.assert_allclose(documents, model.embed([model.manifest.prefixes["search_document"] + t for t in
                                                       ("a", "b c")], dim=32), atol=1e-6)
    assert model.manifest.prefixes["search_query"] != model.manifest.prefixes["search_document"]


async def _both(embeddings):
    return await embeddings.aembed_query("q"), await embeddings.aembed_documents(["d"])


def test_async_methods_give_the_same_vectors(bundle):
    import asyncio

    embeddings = EdgeEmbedEmbeddings(bundle("nomic-v15-tiny"), precision="fp32")
    query, documents = asyncio.run(_both(embeddings))
    assert query == embeddings.embed_query("q") and documents == embeddings.embed_documents(["d"])


def test_without_langchain_the_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "langchain_core.embeddings", None)  # what an uninstalled package looks like
    monkeypatch.delitem(sys.modules, "edge_embed.integrations.langchain")
    with pytest.raises(ImportError, match=r"pip install 'edge-embed\[langchain\]'"):
        importlib.import_module("edge_embed.integrations.langchain")
