"""LlamaIndex: ``EdgeEmbedEmbedding``, a ``BaseEmbedding`` over a bundle.

>>> from llama_index.core import Settings
>>> Settings.embed_model = EdgeEmbedEmbedding("nomic-v15")
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from edge_embed.embedder import Embedder

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
    from pydantic import Field, PrivateAttr
except ImportError as exc:  # the extra is optional: say which one to install
    raise ImportError(
        "edge_embed.integrations.llama_index needs llama-index-core: pip install 'edge-embed[llama-index]'"
    ) from exc


class EdgeEmbedEmbedding(BaseEmbedding):
    """Documents (nodes) are embedded with the ``search_document`` task, queries with ``search_query``.

    bundle, precision and threads go to ``edge_embed.Embedder``; dim is the Matryoshka width (None: full).
    ``embed_batch_size`` is how many texts LlamaIndex hands over per call; the runtime then plans its
    own token-budget batches inside each call, so a large value costs no memory and pads less.
    """

    bundle: str = Field(description="Path of the edge-embed bundle directory.")
    precision: str = Field(default="auto", description="int8, fp32, fp16 or auto.")
    dim: int | None = Field(default=None, description="Matryoshka dimension; None for the full width.")
    threads: int | None = Field(default=None, description="onnxruntime intra-op threads; None for its default.")
    embed_batch_size: int = Field(default=256, gt=0, le=2048, description="Texts per call to the runtime.")

    _embedder: Embedder = PrivateAttr()

    def __init__(self, bundle: str | Path, precision: str = "auto", dim: int | None = None,
                 threads: int | None = None, **kwargs):
        kwargs.setdefault("model_name", str(bundle))
        super().__init__(bundle=str(bundle), precision=precision, dim=dim, threads=threads, **kwargs)
        self._embedder = Embedder(bundle, precision=precision, threads=threads)

    @classmethod
    def class_name(cls) -> str:
        return "EdgeEmbedEmbedding"

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embedder.embed([query], task="search_query", dim=self.dim)[0].tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        """All texts in one runtime call: it sorts them by length and batches by tokens."""
        return self._embedder.embed(texts, task="search_document", dim=self.dim).tolist()

    # The async variants run the same work on a worker thread (onnxruntime releases the GIL),
    # so an event loop is not blocked while a batch runs.
    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
