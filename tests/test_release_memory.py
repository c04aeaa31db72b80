"""Memory the largest batches leave in onnxruntime's arena goes back: Embedder.release_memory, and the
server's worker calling it once idle. On the real MiniLM bundle: its big batches leave tens of MB."""
from __future__ import annotations

import time

import numpy as np
from serving import Server, make_texts

from edge_embed import Embedder
from edge_embed.measure import rss_mb

LONG = make_texts(64, seed=5, low=150, high=200)  # ~64 x 200 tokens: several full 2,048-token batches


def test_release_memory_gives_back_the_big_batches_arena_and_changes_no_vector(minilm_bundle):
    model = Embedder(minilm_bundle, precision="fp32", threads=1)
    model.embed(["warm up"])
    loaded = rss_mb()
    before = model.embed(LONG)
    grown = rss_mb()
    assert grown - loaded > 20, f"the big batches should leave their buffers: {loaded:.0f} -> {grown:.0f} MB"
    model.release_memory()
    released = rss_mb()
    assert released - loaded < 0.5 * (grown - loaded), f"{loaded:.0f} -> {grown:.0f} -> {released:.0f} MB"
    np.testing.assert_array_equal(model.embed(LONG), before)


def test_an_idle_server_gives_back_what_its_big_batches_took(minilm_bundle, tmp_path):
    with Server(str(minilm_bundle), "--precision", "fp32", "--threads", "1", log_dir=tmp_path) as server:
        assert server.post("/v1/embeddings", {"input": ["warm up"]}).status_code == 200
        time.sleep(3)  # past the worker's idle release, so `loaded` is what an idle server holds
        loaded = server.rss_mb()
        answer = server.post("/v1/embeddings", {"input": LONG})
        assert answer.status_code == 200, answer.text
        grown = server.rss_mb()
        assert grown - loaded > 20, f"the big batches should leave their buffers: {loaded:.0f} -> {grown:.0f} MB"
        deadline = time.monotonic() + 15
        while (released := server.rss_mb()) - loaded >= 0.5 * (grown - loaded) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert released - loaded < 0.5 * (grown - loaded), f"{loaded:.0f} -> {grown:.0f} -> {released:.0f} MB"
        again = server.post("/v1/embeddings", {"input": LONG[:4]}).json()
        expected = Embedder(minilm_bundle, precision="fp32").embed(LONG[:4])
        got = np.array([row["embedding"] for row in again["data"]])
        assert np.abs(got - expected).max() <= 1e-5
