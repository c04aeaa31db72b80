"""Chroma: ``EdgeEmbedEmbeddingFunction``, a ``chromadb.EmbeddingFunction`` over a bundle.

>>> collection = client.create_collection("docs", embedding_function=EdgeEmbedEmbeddingFunction("nomic-v15"))

Registered under the name ``edge_embed``, so a persisted collection rebuilds it from its config.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_embed.embedder import Embedder

try:
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
    from chromadb.utils.embedding_functions import register_embedding_function
except ImportError as exc:  # the extra is optional: say which one to install
    raise ImportError(
        "edge_embed.integrations.chroma needs chromadb: pip install 'edge-embed[chroma]'"
    ) from exc


@register_embedding_function
class EdgeEmbedEmbeddingFunction(EmbeddingFunction[Documents]):
    """``__call__`` embeds documents (``search_document`` task), ``embed_query`` queries (``search_query``).

    bundle, precision and threads go to ``edge_embed.Embedder``; dim is the Matryoshka width (None: full).
    Vectors have unit norm, so the collection's default space is cosine.
    """

    def __init__(self, bundle: str | Path, precision: str = "auto", dim: int | None = None,
                 threads: int | None = None):
        self.bundle, self.precision, self.dim, self.threads = str(bundle), precision, dim, threads
        self.embedder = Embedder(bundle, precision=precision, threads=threads)

    def __call__(self, input: Documents) -> Embeddings:
        return list(self.embedder.embed(input, task="search_document", dim=self.dim))

    def embed_query(self, input: Documents) -> Embeddings:
        return list(self.embedder.embed(input, task="search_query", dim=self.dim))

    @staticmethod
    def name() -> str:
        return "edge_embed"

    def default_space(self) -> Space:
        return "cosine"

    def get_config(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "precision": self.precision, "dim": self.dim, "threads": self.threads}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> EdgeEmbedEmbeddingFunction:
        return EdgeEmbedEmbeddingFunction(**config)
