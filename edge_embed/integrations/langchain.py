"""LangChain: ``EdgeEmbedEmbeddings``, a ``langchain_core.embeddings.Embeddings`` over a bundle.

>>> from langchain_core.vectorstores import InMemoryVectorStore
>>> store = InMemoryVectorStore(EdgeEmbedEmbeddings("nomic-v15"))
"""
from __future__ import annotations

from pathlib import Path

from edge_embed.embedder import Embedder

try:
    from langchain_core.embeddings import Embeddings
except ImportError as exc:  # the extra is optional: say which one to install
    raise ImportError(
        "edge_embed.integrations.langchain needs langchain-core: pip install 'edge-embed[langchain]'"
    ) from exc


class EdgeEmbedEmbeddings(Embeddings):
    """Documents are embedded with the ``search_document`` task, queries with ``search_query``.

    bundle, precision and threads go to ``edge_embed.Embedder``; dim is the Matryoshka width (None: full).
    """

    def __init__(self, bundle: str | Path, precision: str = "auto", dim: int | None = None,
                 threads: int | None = None):
        self.embedder = Embedder(bundle, precision=precision, threads=threads)
        self.dim = dim

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector (a list of dim floats, unit norm) per text, in order; the runtime batches them."""
        return self.embedder.embed(texts, task="search_document", dim=self.dim).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed([text], task="search_query", dim=self.dim)[0].tolist()
