"""Ollama's embedding API: POST /api/embed (and the legacy /api/embeddings), GET /api/tags."""
from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict
from starlette.responses import JSONResponse

from edge_embed.server.embedding import EmbedRequest, embed, parse_inputs
from edge_embed.server.errors import ApiError
from edge_embed.server.schemas import Task

router = APIRouter()


class EmbedBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    input: Any
    truncate: bool = True
    dimensions: int | None = None
    keep_alive: Any = None  # accepted, ignored: models stay loaded
    options: Any = None  # accepted, ignored
    # extensions
    task: Task | None = None
    encoding_format: Literal["float", "base64", "binary", "binary_base64"] = "float"


class LegacyBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: Any
    keep_alive: Any = None
    options: Any = None
    task: Task | None = None


@router.post("/api/embed")
async def api_embed(body: EmbedBody, request: Request):
    start = time.perf_counter_ns()
    state = request.app.state
    req = EmbedRequest(body.model, parse_inputs(body.input, "input", allow_ids=False), body.task, body.dimensions,
                       body.encoding_format, "truncate" if body.truncate else "error", too_long_status=400)
    result = await embed(state.registry, state.limits, request, req)
    return JSONResponse({"model": result.model.name, "embeddings": result.rows(req.output),
                         "total_duration": time.perf_counter_ns() - start, "load_duration": 0,
                         "prompt_eval_count": result.tokens}, headers=result.headers())


@router.post("/api/embeddings")
async def api_embeddings(body: LegacyBody, request: Request):
    state = request.app.state
    if not isinstance(body.prompt, str):
        raise ApiError(422, f"prompt must be one string, not {type(body.prompt).__name__}; "
                            "use /api/embed for several texts", param="prompt")
    req = EmbedRequest(body.model, parse_inputs(body.prompt, "prompt", allow_ids=False), body.task, field="prompt")
    result = await embed(state.registry, state.limits, request, req)
    return JSONResponse({"embedding": result.rows("float")[0]}, headers=result.headers())


@router.get("/api/tags")
async def tags(request: Request):
    models = []
    for m in request.app.state.registry:
        size = sum((m.bundle / f).stat().st_size for f in m.embedder.manifest.models[m.embedder.precision])
        models.append({"name": m.name, "model": m.name, "modified_at": "1970-01-01T00:00:00Z", "size": size,
                       "digest": m.embedder.manifest.files.get(m.embedder.manifest.models[m.embedder.precision][0],
                                                                ""),
                       "details": {"format": "onnx", "family": m.embedder.manifest.family,
                                   "quantization_level": m.embedder.precision}})
    return {"models": models}
