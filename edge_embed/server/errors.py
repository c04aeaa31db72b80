"""Errors over HTTP: one exception type, rendered in the error body each API's clients expect."""
from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

# OpenAI's error "type" and "code" for our statuses
_OPENAI = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", None),
    429: ("rate_limit_error", "server_overloaded"),
    500: ("server_error", None),
    503: ("server_error", "unavailable"),
}
# TEI's native "error_type"
_TEI = {400: "Empty", 401: "Unauthorized", 404: "Validation", 413: "Validation", 422: "Validation",
        429: "Overloaded", 500: "Backend", 503: "Unhealthy"}


class ApiError(HTTPException):
    """An HTTP error with a message that says what to do; `param` names the request field at fault.

    A starlette HTTPException, so that one raised while FastAPI reads the body (the body limit) keeps
    its status."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None):
        super().__init__(status, message, headers)
        self.message = message
        self.param = param


def api_shape(path: str) -> str:
    """Which API a path belongs to, for the error body its clients parse."""
    if path.startswith("/v1/embedding/"):
        return "nomic"
    if path.startswith("/v1/"):
        return "openai"
    if path.startswith("/api/"):
        return "ollama"
    return "tei"


def error_body(path: str, status: int, message: str, param: str | None = None) -> dict:
    shape = api_shape(path)
    if shape == "openai":
        kind, code = _OPENAI.get(status, ("invalid_request_error", None))
        return {"error": {"message": message, "type": kind, "param": param, "code": code}}
    if shape == "nomic":
        return {"detail": message}
    if shape == "ollama":
        return {"error": message}
    return {"error": message, "error_type": _TEI.get(status, "Validation")}


def error_response(path: str, error: ApiError) -> JSONResponse:
    return JSONResponse(error_body(path, error.status_code, error.message, error.param), error.status_code,
                        headers=error.headers)


def validation_message(errors: list[dict]) -> tuple[str, str | None]:
    """pydantic's errors -> one line naming each field at fault, and the first field's name."""
    parts, first = [], None
    for error in errors[:5]:
        loc = [str(part) for part in error.get("loc", ()) if part != "body"]
        field = "body" if error.get("type") == "json_invalid" else ".".join(loc) or "body"
        first = first or field
        if error.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})")
        elif field == "body":
            parts.append("the body must be a JSON object (Content-Type: application/json), e.g. "
                         '{"input": ["some text"]}')
        elif error.get("type") == "missing":
            parts.append(f"{field} is required")
        else:
            parts.append(f"{field}: {error.get('msg')}")
    return "; ".join(parts), first
