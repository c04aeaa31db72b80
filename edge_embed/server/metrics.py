"""Prometheus metrics (prometheus-client) and the ASGI middleware that counts requests by route and status."""
from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()  # ours alone: no process or platform collectors from other libraries' imports
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

REQUESTS = Counter("edge_embed_requests", "HTTP requests by route and status", ["route", "status"],
                   registry=REGISTRY)
REQUEST_SECONDS = Histogram("edge_embed_request_seconds", "Time from request to response", ["route"],
                            buckets=_LATENCY, registry=REGISTRY)
QUEUE_SECONDS = Histogram("edge_embed_queue_seconds", "Time a request waited before its first batch ran",
                          ["model"], buckets=_LATENCY, registry=REGISTRY)
INFERENCE_SECONDS = Histogram("edge_embed_inference_seconds", "onnxruntime time per batch", ["model"],
                              buckets=_LATENCY, registry=REGISTRY)
BATCH_TEXTS = Histogram("edge_embed_batch_texts", "Sequences per batch", ["model"],
                        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=REGISTRY)
BATCH_TOKENS = Histogram("edge_embed_batch_tokens", "Padded-free tokens per batch", ["model"],
                         buckets=(16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384), registry=REGISTRY)
TOKENS = Counter("edge_embed_tokens", "Tokens embedded", ["model"], registry=REGISTRY)
DROPPED_TEXTS = Counter("edge_embed_dropped_texts", "Queued texts dropped because their client hung up",
                        ["model"], registry=REGISTRY)
TRUNCATED_TEXTS = Counter("edge_embed_truncated_texts", "Texts cut to the model's max length", ["model"],
                          registry=REGISTRY)
QUEUE_TOKENS = Gauge("edge_embed_queue_tokens", "Tokens admitted and not yet run", ["model"], registry=REGISTRY)
QUEUE_REQUESTS = Gauge("edge_embed_queue_requests", "Requests admitted and not yet answered", ["model"],
                       registry=REGISTRY)


def exposition() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class RequestMetrics:
    """ASGI middleware: count every HTTP request by its route (the app's known paths; others as "other")
    and status, and time it."""

    def __init__(self, app, routes: set[str]):
        self.app = app
        self.routes = routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in self.routes else "other"
        status = [500]
        start = time.perf_counter()

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            REQUESTS.labels(route, str(status[0])).inc()
            REQUEST_SECONDS.labels(route).observe(time.perf_counter() - start)
