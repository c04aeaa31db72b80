"""text-embeddings-inference's API: POST /embed (and POST /), POST /tokenize, GET /info, GET /health."""
from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict
from starlette.responses import JSONResponse

from edge_embed import __version__
from edge_embed.errors import InputError
from edge_embed.server.embedding import EmbedRequest, embed, parse_inputs
from edge_embed.server.errors import ApiError
from edge_embed.server.schemas import Task

router = APIRouter()


class EmbedBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    inputs: Any
    truncate: bool = True  # TEI refuses long inputs unless asked; here they are cut and counted in a header
    truncation_direction: Literal["right", "Right"] = "right"
    normalize: bool = True
    prompt_name: Task | None = None  # the sentence-transformers prompt names are our tasks
    dimensions: int | None = None
    # extensions
    model: str | None = None
    task: Task | None = None
    encoding_format: Literal["float", "base64", "binary", "binary_base64"] = "float"


class TokenizeBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    inputs: Any
    add_special_tokens: bool = True
    prompt_name: Task | None = None
    model: str | None = None


@router.post("/embed")
@router.post("/")  # TEI's root route: huggingface_hub's InferenceClient(URL).feature_extraction posts here
async def tei_embed(body: EmbedBody, request: Request):
    state = request.app.state
    if body.task and body.prompt_name and body.task != body.prompt_name:
        raise ApiError(422, "task and prompt_name ask for different tasks; send one of them", param="task")
    req = EmbedRequest(body.model, parse_inputs(body.inputs, "inputs"), body.task or body.prompt_name,
                       body.dimensions, body.encoding_format, "truncate" if body.truncate else "error",
                       normalize=body.normalize, field="inputs")
    result = await embed(state.registry, state.limits, request, req)
    return JSONResponse(result.rows(req.output), headers=result.headers())


def _tokens(model, texts: list[str], prefix: str, special: bool) -> list[list[dict]]:
    """TEI's token list; offsets are into the text as embedded (the task prefix included)."""
    answer = []
    for text in texts:
        encoding = model.embedder.tokenizer.tokenizer.encode(prefix + text, add_special_tokens=special)
        answer.append([{"id": i, "text": token, "special": bool(s), "start": start, "stop": stop}
                       for i, token, s, (start, stop) in zip(encoding.ids, encoding.tokens,
                                                             encoding.special_tokens_mask, encoding.offsets)])
    return answer


@router.post("/tokenize")
async def tei_tokenize(body: TokenizeBody, request: Request):
    state = request.app.state
    model = state.registry.get(body.model)
    texts = parse_inputs(body.inputs, "inputs", allow_ids=False)
    if len(texts) > state.limits.max_texts:
        raise ApiError(413, f"{len(texts)} inputs in one request, the limit is {state.limits.max_texts}",
                       param="inputs")
    try:
        prefix = model.embedder.prefix(body.prompt_name)
    except InputError as exc:
        raise ApiError(422, str(exc), param="prompt_name") from None
    return JSONResponse(await asyncio.to_thread(_tokens, model, texts, prefix, body.add_special_tokens))


@router.get("/info")
async def info(request: Request):
    state = request.app.state
    model = state.registry.default
    manifest = model.embedder.manifest
    return {"model_id": model.name, "model_sha": None, "model_dtype": model.embedder.precision,
            "model_type": {"embedding": {"pooling": manifest.pooling}},
            "max_concurrent_requests": None, "max_input_length": model.embedder.max_length,
            "max_batch_tokens": model.embedder.batch_limits.max_tokens,
            "max_client_batch_size": state.limits.max_texts, "max_batch_requests": None,
            "tokenization_workers": None, "version": __version__, "sha": None, "docker_label": None,
            "edge_embed": {"family": manifest.family, "dims": list(model.embedder.dims),
                           "tasks": model.embedder.tasks, "models": [m.name for m in state.registry]}}


@router.get("/health")
async def health(request: Request):
    workers_up = all(m.worker.alive for m in request.app.state.registry)
    if not workers_up:
        return JSONResponse({"error": "a model's worker has stopped", "error_type": "Unhealthy"}, 503)
    return JSONResponse({}, 200)
