"""ASGI middleware that guards every route: the API key and the request body size."""
from __future__ import annotations

import hmac

from edge_embed.server.errors import ApiError, error_response

OPEN_PATHS = {"/health"}  # liveness probes need no key
# A body refused by its Content-Length is still read (up to this much) before the 413: a client still
# sending when the server closes the connection would see a reset instead of the answer.
DRAIN_BYTES = 64 * 1024 * 1024


class ApiKey:
    """401 unless the request carries the key as `Authorization: Bearer KEY` (the openai client) or
    `X-API-Key: KEY`; compared in constant time."""

    def __init__(self, app, key: str | None):
        self.app = app
        self.key = key.encode() if key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.key is None or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        given = headers.get(b"x-api-key", b"")
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer":
            given = token.strip()
        if not hmac.compare_digest(given, self.key):
            error = ApiError(401, "missing or wrong API key; send it as 'Authorization: Bearer KEY'",
                             headers={"WWW-Authenticate": "Bearer"})
            return await error_response(scope["path"], error)(scope, receive, send)
        return await self.app(scope, receive, send)


class BodyLimit:
    """413 for a body over the limit: at once from Content-Length, or while it streams in."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def error(self) -> ApiError:
        return ApiError(413, f"the request body is over {self.max_bytes} bytes; send fewer or shorter texts "
                             "per request (or start the server with a larger --max-body-bytes)")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _drain(receive, DRAIN_BYTES)
            return await error_response(scope["path"], self.error())(scope, receive, send)
        seen = 0

        async def counting_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise self.error()  # FastAPI re-raises HTTPExceptions from reading the body; ours renders it
            return message

        return await self.app(scope, counting_receive, send)


async def _drain(receive, limit: int) -> None:
    seen = 0
    while seen <= limit:
        message = await receive()
        seen += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body"):
            return


class JsonBodies:
    """Every POST body here is JSON: read it as JSON when curl's -d labels it as a form, as Ollama's
    and TEI's documented curl examples (no -H 'Content-Type: application/json') do."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            given = dict(scope["headers"]).get(b"content-type", b"")
            if not given or given.startswith(b"application/x-www-form-urlencoded"):
                scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        return await self.app(scope, receive, send)
