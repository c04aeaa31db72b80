"""`edge-embed serve`: load the bundles, then run the app on uvicorn until SIGTERM or Ctrl-C
(uvicorn stops accepting, answers every accepted request, then the workers stop)."""
from __future__ import annotations

import signal
import sys
import time

import uvicorn

from edge_embed.batching import BatchLimits
from edge_embed.embedder import Embedder
from edge_embed.server.app import create_app
from edge_embed.server.registry import Limits, Registry, ServedModel, parse_model_spec
from edge_embed.server.worker import BatchWorker


class _Server(uvicorn.Server):
    """uvicorn, exiting with status 0 after a graceful stop: it would re-raise SIGTERM / SIGINT once
    every request is answered, so the process would end as killed by the signal."""

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        print(f"[serve] {signal.Signals(sig).name}: answering the requests already accepted, then exiting",
              file=sys.stderr, flush=True)
        getattr(self, "_captured_signals", []).clear()


def load_models(specs: list[str], precision: str, providers: str, threads: int | None, max_length: int | None,
                limits: Limits, batch_tokens: int | None = None) -> Registry:
    models = []
    for spec in specs:
        name, bundle = parse_model_spec(spec)
        start = time.perf_counter()
        embedder = Embedder(bundle, precision=precision, providers=providers, threads=threads, max_length=max_length,
                            batch_limits=None if batch_tokens is None else BatchLimits(max_tokens=batch_tokens))
        worker = BatchWorker(name, embedder, limits.max_queue_tokens)
        models.append(ServedModel(name, bundle, embedder, worker, time.perf_counter() - start))
        print(f"[serve] {name}: {bundle} ({embedder.precision}, {embedder.manifest.family}, "
              f"max length {embedder.max_length})", file=sys.stderr, flush=True)
    return Registry(models)


def serve(args) -> int:
    limits = Limits(args.max_body_bytes, args.max_texts, args.max_request_tokens, args.max_queue_tokens,
                    args.api_key)
    registry = load_models(args.bundles, args.precision, args.providers, args.threads, args.max_length, limits,
                           args.batch_tokens)
    app = create_app(registry, limits)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"[serve] warning: listening on {args.host} without --api-key: anyone who can reach it can use it",
              file=sys.stderr)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                            access_log=args.log_level == "debug", timeout_graceful_shutdown=None)
    _Server(config).run()
    print("[serve] stopped", file=sys.stderr)
    return 0
