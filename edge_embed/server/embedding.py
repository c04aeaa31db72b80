"""From a parsed request of any API shape to vectors: the one path every embedding route takes.

Checks (model, counts, dims, task), tokenizing once at admission (off the event loop), the token
limit, the batching worker, and each request's own post-processing with the runtime's functions."""
from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass

import numpy as np
from starlette.requests import Request

from edge_embed.errors import InputError, TextTooLongError, is_int
from edge_embed.pooling import binarize, matryoshka
from edge_embed.server import metrics
from edge_embed.server.errors import ApiError
from edge_embed.server.registry import Limits, Registry, ServedModel
from edge_embed.server.worker import QueueFull

OUTPUT_FORMATS = ("float", "base64", "binary", "binary_base64")
# Requests up to this many characters (or token ids) are tokenized on the event loop: WordPiece ~0.1 ms at
# 200 characters and ~1 ms at 2,000, the lean XLM-R tokenizer ~0.3-0.9 and ~3 ms, where a hop to a thread and
# back cost an idle server's short query 1-3 ms (BENCHMARKS.md, Serve); bigger ones go to a thread so the
# loop keeps answering.
INLINE_TOKENIZE_CHARS = 2000
CLIENT_GONE = 499  # nginx's "client closed request": counted in the metrics, never read by anyone


@dataclass
class EmbedRequest:
    """What every API shape asks for, in the runtime's terms. `field` and `dim_field` are the
    request's own names for the inputs and the dimension, for messages."""

    model: str | None
    inputs: list[str] | list[list[int]]
    task: str | None = None
    dim: int | None = None
    output: str = "float"  # OUTPUT_FORMATS
    truncation: str = "truncate"  # or "error", "chunk"
    normalize: bool = True
    field: str = "input"
    dim_field: str = "dimensions"
    too_long_status: int = 422  # Ollama answers a too-long input with 400 when truncate is false


@dataclass
class EmbedResult:
    model: ServedModel
    vectors: np.ndarray  # float32 [n, dim], or uint8 [n, dim / 8] for the binary formats
    tokens: int
    truncated: int

    def rows(self, output: str) -> list:
        """Each vector as the request's format asked: floats or ints, or base64 of the little-endian
        float32 values (what the openai client decodes) or of the packed bits."""
        if output in ("base64", "binary_base64"):
            data = self.vectors.astype("<f4") if output == "base64" else self.vectors
            return [base64.b64encode(row.tobytes()).decode("ascii") for row in data]
        return self.vectors.tolist()

    def headers(self) -> dict[str, str]:
        return {"x-truncated-texts": str(self.truncated), "x-compute-tokens": str(self.tokens)}


def parse_inputs(value, field: str, allow_ids: bool = True) -> list[str] | list[list[int]]:
    """A string, a list of strings, a list of token ids or a list of such lists -> list of texts or
    of id lists. Empty or non-string items are a 422 that names the item."""
    if isinstance(value, str):
        value = [value]
    elif allow_ids and isinstance(value, list) and value and all(is_int(v) for v in value):
        value = [value]
    if not isinstance(value, list):
        raise ApiError(422, f"{field} must be a string or a list of strings, not {_kind(value)}", param=field)
    if not value:
        raise ApiError(422, f"{field} is empty; send at least one text", param=field)
    ids = allow_ids and isinstance(value[0], list)
    for index, item in enumerate(value):
        if ids:
            if not (isinstance(item, list) and item and all(is_int(v) for v in item)):
                raise ApiError(422, f"{field}[{index}] must be a non-empty list of token ids (send texts, or lists "
                                    f"of ids, not a mix), not {_kind(item)}", param=field)
        elif not isinstance(item, str):
            raise ApiError(422, f"{field}[{index}] is {_kind(item)}, not a string; send texts as strings",
                           param=field)
        elif not item.strip():
            raise ApiError(422, f"{field}[{index}] is empty; remove empty texts before embedding", param=field)
    return value


def _characters(inputs: list[str] | list[list[int]]) -> int:
    total = 0
    for item in inputs:
        total += len(item)
        if total > INLINE_TOKENIZE_CHARS:
            break
    return total


def _kind(value) -> str:
    if value is None:
        return "null"
    shown = repr(value)
    return f"{type(value).__name__} {shown if len(shown) <= 24 else shown[:20] + '...'}"


def check_dim(model: ServedModel, req: EmbedRequest) -> int:
    low, high = model.embedder.dims
    dim = high if req.dim is None else req.dim
    if not (is_int(dim) and low <= dim <= high):
        raise ApiError(422, f"{req.dim_field} must be an integer from {low} to {high} for model {model.name!r}, "
                            f"not {req.dim!r}", param=req.dim_field)
    if req.output.startswith("binary") and dim % 8:
        raise ApiError(422, f"binary output needs {req.dim_field} to be a multiple of 8, not {dim}",
                       param=req.dim_field)
    return int(dim)


def _strip_prefix(text: str, prefix: str) -> str:
    """A text that already starts with the task's prefix gets it once, not twice."""
    head = prefix.rstrip()
    return text[len(head):].lstrip() if head and text.startswith(head) else text


def tokenize(model: ServedModel, req: EmbedRequest,
             prefix: str) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, list[int]]:
    """(sequences, owner, keep, truncated) as TextTokenizer.encode gives them; token ids get the model's
    special tokens (and the task prefix) around them."""
    tokenizer = model.embedder.tokenizer
    if isinstance(req.inputs[0], str):
        try:
            encoded = tokenizer.encode([_strip_prefix(t, prefix) for t in req.inputs], prefix, req.truncation)
        except TextTooLongError as exc:
            raise _too_long(req, exc.index, exc.tokens, exc.max_length, exc.at_least) from None
        except InputError as exc:
            raise ApiError(422, str(exc).replace("texts[", f"{req.field}["), param=req.field) from None
        return encoded.sequences, encoded.owner, encoded.keep, encoded.truncated
    if req.truncation == "chunk":
        raise ApiError(422, "long texts can be chunked only when sent as text, not token ids", param=req.field)
    vocab = tokenizer.tokenizer.get_vocab_size()
    head, _, tail = tokenizer._split(tokenizer.tokenizer.encode("a"))  # with no content the specials are all "head"
    room = tokenizer.max_length - len(head) - len(tail)
    kept = tokenizer.prefix_ids(prefix)
    sequences, truncated = [], []
    for index, ids in enumerate(req.inputs):
        if min(ids) < 0 or max(ids) >= vocab:
            raise ApiError(422, f"{req.field}[{index}] has token ids outside this model's vocabulary (0 to "
                                f"{vocab - 1}); send text, or ids from this model's own tokenizer", param=req.field)
        content = kept + list(ids)
        if len(content) > room:
            if req.truncation == "error":
                raise _too_long(req, index, len(content) + len(head) + len(tail), tokenizer.max_length)
            content = content[:room]
            truncated.append(index)
        sequences.append(np.asarray(head + content + tail, dtype=np.int64))
    keep = np.array([(0, len(seq)) for seq in sequences], dtype=np.int64)
    return sequences, np.arange(len(sequences), dtype=np.int64), keep, truncated


def _too_long(req: EmbedRequest, index: int, tokens: int, max_length: int, at_least: bool = False) -> ApiError:
    """A text over the max length when the request said not to truncate: what an HTTP client can send."""
    return ApiError(req.too_long_status,
                    f"{req.field}[{index}] has {'over ' if at_least else ''}{tokens} tokens, more than the model's "
                    f"max length {max_length}; shorten it, or send \"truncate\": true to cut it to {max_length} "
                    "tokens", param=req.field)


def postprocess(model: ServedModel, req: EmbedRequest, dim: int):
    """pooled [n, hidden] -> the request's vectors, with the runtime's own Matryoshka and binary steps."""
    mat = model.embedder.manifest.matryoshka
    binary = req.output.startswith("binary")

    def finish(pooled: np.ndarray) -> np.ndarray:
        if not req.normalize and not binary:
            return np.ascontiguousarray(pooled[:, :dim])
        vectors = matryoshka(pooled, dim, mat.layer_norm, mat.layer_norm_eps)
        return binarize(vectors) if binary else vectors

    return finish


async def embed(registry: Registry, limits: Limits, http: Request, req: EmbedRequest) -> EmbedResult:
    model = registry.get(req.model)
    if len(req.inputs) > limits.max_texts:
        raise ApiError(413, f"{len(req.inputs)} inputs in one request, the limit is {limits.max_texts}; "
                            "split them over several requests", param=req.field)
    if req.output not in OUTPUT_FORMATS:
        raise ApiError(422, f"encoding_format must be one of {list(OUTPUT_FORMATS)}, not {req.output!r}",
                       param="encoding_format")
    dim = check_dim(model, req)
    try:
        prefix = model.embedder.prefix(req.task)
    except InputError as exc:
        raise ApiError(422, str(exc), param="task") from None
    if _characters(req.inputs) <= INLINE_TOKENIZE_CHARS:  # a query: faster here than a hop to a thread and back
        sequences, owner, keep, truncated = tokenize(model, req, prefix)
    else:
        sequences, owner, keep, truncated = await asyncio.to_thread(tokenize, model, req, prefix)
    tokens = int(sum(len(seq) for seq in sequences))
    if tokens > limits.max_request_tokens:
        raise ApiError(413, f"the request has {tokens} tokens, the limit is {limits.max_request_tokens} per request; "
                            "split it over several requests", param=req.field)
    try:
        job = model.worker.submit(sequences, owner, keep, len(req.inputs), postprocess(model, req, dim))
    except QueueFull as exc:
        retry = model.worker.retry_after()
        raise ApiError(429, f"the server is busy ({exc}); retry after {retry} s",
                       headers={"Retry-After": str(retry)}) from None
    if truncated:
        metrics.TRUNCATED_TEXTS.labels(model.name).inc(len(truncated))
    vectors = await _answer_unless_hung_up(http, model, job)
    return EmbedResult(model, vectors, tokens, len(truncated))


async def _answer_unless_hung_up(http: Request, model: ServedModel, job) -> np.ndarray:
    """Wait for the worker's answer; if the client disconnects first, its queued texts are dropped."""
    hangup = asyncio.ensure_future(_disconnected(http))
    try:
        await asyncio.wait({job.future, hangup}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hangup.cancel()
    if not job.future.done():
        model.worker.cancel(job)
        raise ApiError(CLIENT_GONE, "the client closed the connection")
    return job.future.result()


async def _disconnected(http: Request) -> None:
    """The body has been read, so the next ASGI message is the disconnect."""
    while (await http.receive())["type"] != "http.disconnect":
        pass
