"""The ASGI app: the four API shapes' routes on the served models, guards, error bodies, metrics."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from edge_embed import __version__
from edge_embed.errors import EdgeEmbedError
from edge_embed.server import metrics, nomic, ollama, openai, tei
from edge_embed.server.errors import ApiError, error_response, validation_message
from edge_embed.server.guards import ApiKey, BodyLimit, JsonBodies
from edge_embed.server.registry import Limits, Registry

log = logging.getLogger("edge_embed.server")


def create_app(registry: Registry, limits: Limits) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for model in registry:
            model.worker.start()
        yield
        for model in registry:  # uvicorn has answered every accepted request by now
            model.worker.stop()

    app = FastAPI(title="edge-embed", version=__version__, lifespan=lifespan)
    app.state.registry = registry
    app.state.limits = limits
    for api in (openai, nomic, tei, ollama):
        app.include_router(api.router)

    @app.get("/metrics")
    async def prometheus():
        data, content_type = metrics.exposition()
        return Response(data, media_type=content_type)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(request.url.path, exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):  # 404 for an unknown path, 405
        return error_response(request.url.path, ApiError(exc.status_code, str(exc.detail), headers=exc.headers))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        message, field = validation_message(errors)
        status = 400 if any(e.get("type") == "json_invalid" for e in errors) else 422
        return error_response(request.url.path, ApiError(status, message, param=field))

    @app.exception_handler(EdgeEmbedError)
    async def runtime_error(request: Request, exc: EdgeEmbedError):
        log.error("embedding failed on %s: %s", request.url.path, exc)
        return error_response(request.url.path, ApiError(500, f"embedding failed: {exc}"))

    routes = {route.path for api in (openai, nomic, tei, ollama) for route in api.router.routes} | {"/metrics"}
    app.add_middleware(JsonBodies)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(ApiKey, key=limits.api_key)
    app.add_middleware(metrics.RequestMetrics, routes=routes)  # added last: outermost, counts the 401s and 413s
    return app
