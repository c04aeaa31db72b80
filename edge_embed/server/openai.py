"""OpenAI's embeddings API: POST /v1/embeddings, GET /v1/models (what the `openai` client, LangChain's
OpenAIEmbeddings and most local-docs apps call)."""
from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict
from starlette.responses import JSONResponse

from edge_embed.server.embedding import EmbedRequest, embed, parse_inputs
from edge_embed.server.schemas import Task

router = APIRouter()


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: Any  # a string, a list of strings, a list of token ids or a list of such lists
    model: str | None = None
    encoding_format: Literal["float", "base64", "binary", "binary_base64"] = "float"
    dimensions: int | None = None
    user: str | None = None  # accepted, ignored
    # extensions
    task: Task | None = None
    truncate: bool = True


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingsRequest, request: Request):
    state = request.app.state
    req = EmbedRequest(body.model, parse_inputs(body.input, "input"), body.task, body.dimensions,
                       body.encoding_format, "truncate" if body.truncate else "error")
    result = await embed(state.registry, state.limits, request, req)
    data = [{"object": "embedding", "embedding": row, "index": i} for i, row in enumerate(result.rows(req.output))]
    return JSONResponse({"object": "list", "data": data, "model": result.model.name,
                         "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens}},
                        headers=result.headers())


@router.get("/v1/models")
async def models(request: Request):
    data = [{"id": m.name, "object": "model", "created": 0, "owned_by": "edge-embed"}
            for m in request.app.state.registry]
    return {"object": "list", "data": data}
