"""One error shape for every failure: OpenAI's `{"error": {message, type, param, code}}`.

Typed exceptions carry their status; `install_error_handlers` maps everything (our errors, request
validation, unexpected exceptions) to that JSON, so no route builds an error body by hand.
"""

from __future__ import annotations

import logging
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
    if isinstance(exc, AdapterError | ModelLoadError):
        return APIError(400, str(exc))
    if isinstance(exc, HermesdError):
        return APIError(500, str(exc), type="server_error")
    log.error("unexpected error", exc_info=exc)
    return APIError(500, "internal server error", type="server_error")


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def _validation_param(loc: tuple[Any, ...]) -> str | None:
    parts = [p for p in loc if p != "body"]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api(_request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
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
        return error_response(APIError(400, message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(APIError(exc.status_code, str(exc.detail), type=kind))

    @app.exception_handler(HermesdError)
    async def _ours(_request: Request, exc: HermesdError) -> JSONResponse:
        return error_response(to_api_error(exc))

    @app.exception_handler(PromptError)
    async def _prompt(_request: Request, exc: PromptError) -> JSONResponse:
        return error_response(to_api_error(exc))

    @app.exception_handler(Exception)
    async def _any(_request: Request, exc: Exception) -> JSONResponse:
        return error_response(to_api_error(exc))
