"""A reference outside our own code: the checkpoint run by sentence-transformers, with its own
tokenizer, pooling and normalization. Validation against the torch port shares our tokenizer and
pooling code, so a bug there would pass it; this comparison would catch it.

Only where sentence-transformers runs the checkpoint without remote code (BERT-family models):
the Nomic models need the hub's custom code (`trust_remote_code`), and the exporter runs none.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from edge_embed import Embedder
from edge_embed.errors import TruncationWarning

ST_MIN_COSINE = 0.9999  # fp32 ONNX vs sentence-transformers, unit-norm full-width vectors


def sentence_transformers_figures(source: Path, embedder: Embedder, texts: list[str]) -> dict:
    """{"max_abs", "min_cosine", "mean_cosine", "version"} of the fp32 bundle against
    sentence-transformers, or {"skipped": why}."""
    try:
        import sentence_transformers
    except ImportError:
        return {"skipped": "sentence-transformers is not installed (pip install sentence-transformers)"}
    if embedder.manifest.family != "bert":
        return {"skipped": f"{embedder.manifest.family} needs the model's remote code in sentence-transformers, "
                           "which the exporter never runs"}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: nothing to fetch
    try:
        model = sentence_transformers.SentenceTransformer(str(source), device="cpu", local_files_only=True)
        reference = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    except Exception as exc:  # noqa: BLE001 - any failure of a third-party loader is reported, not fatal
        return {"skipped": f"sentence-transformers could not run {source.name}: {exc.__class__.__name__}: {exc}"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)  # both sides cut at the same max length
        got = embedder.embed(texts)
    cos = (reference.astype(np.float64) * got).sum(axis=1)
    return {
        "max_abs": float(np.abs(reference - got).max()),
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
        "version": sentence_transformers.__version__,
    }
