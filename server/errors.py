"""One error shape for every failure: OpenAI's `{"error": {message, type, param, code}}`, or the
shape of the API that was called (`error_body`: Anthropic's under /v1/messages, Ollama's under
/api/).

Typed exceptions carry their status; `install_error_handlers` maps everything (our errors, request
validation, unexpected exceptions) to that JSON, so no route builds an error body by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hermesd.models.formats.errors import PromptError
from hermesd.runtime.errors import (
    AdapterError,
    AdapterNotFound,
    ContextLengthExceeded,
    EngineOverloaded,
    EngineShuttingDown,
    HermesdError,
    ModelLoadError,
    UpstreamError,
)
from hermesd.server.protocol.text import LoneSurrogateError

log = logging.getLogger(__name__)


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


ANTHROPIC_PATHS = ("/v1/messages",)
# Anthropic's error types by status (its documented list); other statuses keep ours
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
}


def anthropic_body(err: APIError) -> dict[str, Any]:
    """Anthropic's error shape: `{"type": "error", "error": {"type", "message"}}`."""
    kind = _ANTHROPIC_TYPES.get(err.status, err.type)
    return {"type": "error", "error": {"type": kind, "message": err.message}}


OLLAMA_PATHS = ("/api/",)


def error_body(err: APIError, path: str = "") -> dict[str, Any]:
    """The error JSON in the shape of the API that `path` belongs to."""
    if path.startswith(ANTHROPIC_PATHS):
        return anthropic_body(err)
    if path.startswith(OLLAMA_PATHS):
        return {"error": err.message}  # Ollama's shape: the message alone
    return err.body()


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def to_api_error(exc: BaseException) -> APIError:
    """Map any exception to the APIError a client should see."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ContextLengthExceeded):
        return APIError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, PromptError):
        return APIError(400, str(exc), param=exc.param)
    if isinstance(exc, AdapterNotFound):
        return APIError(404, str(exc), code="model_not_found")
    if isinstance(exc, EngineOverloaded):
        return APIError(
            503,
            str(exc),
            type="server_error",
            code="server_busy",
            headers={"Retry-After": str(exc.retry_after)},
        )
    if isinstance(exc, EngineShuttingDown):
        return APIError(
            503, str(exc), type="server_error", code="shutting_down", headers={"Retry-After": "5"}
        )
    if isinstance(exc, UpstreamError):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return APIError(exc.status, str(exc), type=exc.type, param=exc.param, code=exc.code, headers=headers)
    if isinstance(exc, AdapterError | ModelLoadError):
        return APIError(400, str(exc))
    if isinstance(exc, HermesdError):
        return APIError(500, str(exc), type="server_error")
    log.error("unexpected error", exc_info=exc)
    return APIError(500, "internal server error", type="server_error")


def error_response(err: APIError, path: str = "") -> JSONResponse:
    return JSONResponse(error_body(err, path), status_code=err.status, headers=err.headers)


def _validation_param(loc: tuple[Any, ...]) -> str | None:
    parts = [p for p in loc if p != "body"]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def validation_error(errors: Sequence[Any]) -> APIError:
    """The 400 for a request that failed validation (pydantic's `errors()`; the first one counts)."""
    first = errors[0] if errors else {}
    param = _validation_param(tuple(first.get("loc", ())))
    msg = first.get("msg", "invalid request")
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, LoneSurrogateError):
        message, param = str(cause), cause.param
    elif first.get("type") == "json_invalid":
        message = f"the request body is not valid JSON: {msg}"
        param = None
    else:
        message = f"{param}: {msg}" if param else msg
    return APIError(400, message, param=param)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc.errors()), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(APIError(exc.status_code, str(exc.detail), type=kind), request.url.path)

    @app.exception_handler(HermesdError)
    async def _ours(request: Request, exc: HermesdError) -> JSONResponse:
        return error_response(to_api_error(exc), request.url.path)

    @app.exception_handler(PromptError)
    async def _prompt(request: Request, exc: PromptError) -> JSONResponse:
        return error_response(to_api_error(exc), request.url.path)

    @app.exception_handler(Exception)
    async def _any(request: Request, exc: Exception) -> JSONResponse:
        return error_response(to_api_error(exc), request.url.path)
