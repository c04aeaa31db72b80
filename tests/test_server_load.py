"""Load on a real server over loopback, bounded in count and time: 2,000 requests from 32 concurrent clients
on all four API shapes, a tenth of them malformed in varied ways. Every good request gets the Embedder's
vectors, every bad one a 4xx, nothing a 5xx, and the server's memory stays flat."""
from __future__ import annotations

import asyncio
import base64
import json
import random

import httpx
import numpy as np
import pytest
from serving import Server, make_texts

from edge_embed import Embedder

pytest.importorskip("fastapi")

CLIENTS = 32
REQUESTS = 2000
WARMUP = 320
TASKS = (None, "search_query", "search_document")
DIMS = (None, 32)
MAX_TEXTS = 64


def malformed(rng: random.Random, name: str) -> tuple[str, dict | bytes]:
    """One bad request: (path, JSON body or raw bytes)."""
    kind = rng.randrange(13)
    return [
        ("/v1/embeddings", b'{"input": ["unterminated'),
        ("/v1/embeddings", {"input": ["fine", ""]}),
        ("/api/embed", {"input": ["fine", 7]}),
        ("/embed", {"inputs": []}),
        ("/v1/embedding/text", {"texts": [None]}),
        ("/v1/embeddings", {"input": "x", "model": "no-such-model"}),
        ("/api/embed", {"input": "x", "dimensions": 4096}),
        ("/v1/embeddings", {"input": "x", "dimensions": "big"}),
        ("/v1/embeddings", {"input": "x", "encoding_format": "binary", "dimensions": 12}),
        ("/embed", {"inputs": ["x"] * (MAX_TEXTS + 1)}),
        ("/v1/embeddings", {"input": [[1, 2, 99_999_999]]}),
        ("/api/embed", {"model": name}),  # no input
        ("/v1/embedding/text", {"texts": ["x"], "task_type": "summarize"}),
    ][kind]


def good(rng: random.Random, pool: int) -> tuple[str, dict, list[int], str | None, int | None, str]:
    """(path, body, text indices, task, dim, format) of one good request."""
    path = rng.choice(["/v1/embeddings", "/api/embed", "/embed", "/v1/embedding/text"])
    picks = [rng.randrange(pool) for _ in range(rng.randint(1, 4))]
    task, dim = rng.choice(TASKS), rng.choice(DIMS)
    fmt = rng.choice(["float", "base64"]) if path == "/v1/embeddings" else "float"
    field = {"/v1/embeddings": "input", "/api/embed": "input", "/embed": "inputs", "/v1/embedding/text": "texts"}[path]
    body = {field: picks, "encoding_format": fmt}
    if path == "/v1/embedding/text":
        task = task or "search_document"  # Nomic's default
        body["task_type"] = task
        body["dimensionality"] = dim
    else:
        body["task"] = task
        body["dimensions"] = dim
    return path, body, picks, task, dim, fmt


def vectors(path: str, answer: dict, fmt: str) -> np.ndarray:
    if path == "/v1/embeddings":
        rows = [d["embedding"] for d in answer["data"]]
        if fmt == "base64":
            return np.array([np.frombuffer(base64.b64decode(r), dtype="<f4") for r in rows])
        return np.array(rows)
    return np.array(answer if path == "/embed" else answer["embeddings"])


async def drive(server: Server, count: int, seed: int, texts: list[str], expected: dict) -> dict[str, int]:
    rng = random.Random(seed)
    plan = [("bad", *malformed(rng, "tiny")) if i % 10 == 3 else ("good", *good(rng, len(texts)))
            for i in range(count)]
    outcome = {"good": 0, "bad": 0}
    queue: asyncio.Queue = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            item = queue.get_nowait()
            if item[0] == "bad":
                _, path, body = item
                kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
                answer = await http.post(path, **kwargs)
                assert 400 <= answer.status_code < 500, (path, body, answer.status_code, answer.text)
                assert "error" in answer.json() or "detail" in answer.json()
                outcome["bad"] += 1
                continue
            _, path, body, picks, task, dim, fmt = item
            body = {**body, next(k for k in ("input", "inputs", "texts") if k in body): [texts[i] for i in picks]}
            answer = await http.post(path, json=body)
            assert answer.status_code == 200, (path, answer.status_code, answer.text)
            got = vectors(path, answer.json(), fmt)
            assert np.abs(got - expected[task, dim][picks]).max() <= 1e-5, (path, body)
            outcome["good"] += 1

    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as http:
        await asyncio.wait_for(asyncio.gather(*(client(http) for _ in range(CLIENTS))), timeout=600)
    return outcome


@pytest.mark.slow
def test_2000_requests_from_32_clients(bundle, tmp_path):
    v15 = bundle("nomic-v15-tiny")
    model = Embedder(v15, precision="fp32")
    texts = make_texts(300, seed=11, low=2, high=60)
    expected = {(task, dim): model.embed(texts, task=task, dim=dim) for task in TASKS for dim in DIMS}
    args = ["--precision", "fp32", "--max-texts", str(MAX_TEXTS)]
    with Server(f"tiny={v15}", *args, log_dir=tmp_path) as server:
        asyncio.run(drive(server, WARMUP, seed=1, texts=texts, expected=expected))
        warm = server.rss_mb()
        outcome = asyncio.run(drive(server, REQUESTS, seed=2, texts=texts, expected=expected))
        after = server.rss_mb()
        assert outcome == {"good": REQUESTS - REQUESTS // 10, "bad": REQUESTS // 10}
        assert after <= 1.10 * warm, f"RSS grew from {warm:.0f} MB after warm-up to {after:.0f} MB"
        statuses = [line for line in httpx.get(server.url + "/metrics", timeout=30).text.splitlines()
                    if line.startswith("edge_embed_requests_total")]
        assert not [line for line in statuses if 'status="5' in line], statuses
        print(json.dumps({"rss_warm_mb": round(warm, 1), "rss_after_mb": round(after, 1)}))
