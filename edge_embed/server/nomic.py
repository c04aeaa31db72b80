"""Nomic's own Embedding API, as the model's launch post and the `nomic` client use it:
POST /v1/embedding/text. A user of that client or its curl example changes only the URL."""
from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict
from starlette.responses import JSONResponse

from edge_embed.server.embedding import EmbedRequest, embed, parse_inputs
from edge_embed.server.schemas import Task

router = APIRouter()
LONG_TEXT_MODES = {"truncate": "truncate", "mean": "chunk"}  # Nomic's name -> the runtime's truncation


class TextEmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    texts: Any
    model: str | None = None
    task_type: Task = "search_document"  # the Nomic client's default
    dimensionality: int | None = None
    long_text_mode: Literal["truncate", "mean"] = "truncate"
    # extensions
    encoding_format: Literal["float", "base64", "binary", "binary_base64"] = "float"
    truncate: bool = True


@router.post("/v1/embedding/text")
async def embedding_text(body: TextEmbeddingRequest, request: Request):
    state = request.app.state
    truncation = LONG_TEXT_MODES[body.long_text_mode] if body.truncate else "error"
    req = EmbedRequest(body.model, parse_inputs(body.texts, "texts", allow_ids=False), body.task_type,
                       body.dimensionality, body.encoding_format, truncation, field="texts",
                       dim_field="dimensionality")
    result = await embed(state.registry, state.limits, request, req)
    return JSONResponse({"embeddings": result.rows(req.output), "model": result.model.name,
                         "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens}},
                        headers=result.headers())
