"""Ollama's API (/api/...). Errors take Ollama's shape, `{"error": "message"}`, in server/errors.py;
a stream is NDJSON, and an error after its first line is one more line, `{"error": ...}`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from hermesd.server.errors import error_body, to_api_error
from hermesd.server.protocol.ollama import OllamaChatRequest, OllamaGenerateRequest, OllamaShowRequest
from hermesd.server.routes.deps import serving
from hermesd.server.serving_ollama import fold, ollama_version
from hermesd.server.state import Serving
from hermesd.server.streaming import dumps, with_cancellation

router = APIRouter(prefix="/api")


async def _reply(lines: AsyncIterator[dict[str, Any]], stream: bool, text_key: str) -> Response:
    if not stream:
        return JSONResponse(fold([line async for line in lines], text_key))
    return StreamingResponse(_ndjson(lines), media_type="application/x-ndjson")


async def _ndjson(lines: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    try:
        async for line in lines:
            yield dumps(line) + "\n"
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # after the first line, errors travel as a line
        yield dumps(error_body(to_api_error(exc), "/api/")) + "\n"
    finally:
        await lines.aclose()  # type: ignore[attr-defined]


@router.get("/version")
async def version() -> dict[str, str]:
    return ollama_version()


@router.get("/tags")
async def tags(s: Serving = Depends(serving)) -> dict[str, Any]:
    return s.ollama.tags()


@router.get("/ps")
async def ps(s: Serving = Depends(serving)) -> dict[str, Any]:
    return s.ollama.ps()


@router.post("/show")
async def show(body: OllamaShowRequest, s: Serving = Depends(serving)) -> dict[str, Any]:
    return s.ollama.show(body.model_name())


@router.post("/chat")
@with_cancellation
async def chat(body: OllamaChatRequest, request: Request, s: Serving = Depends(serving)) -> Response:
    return await _reply(await s.ollama.chat_lines(body), body.stream, "message")


@router.post("/generate")
@with_cancellation
async def generate(body: OllamaGenerateRequest, request: Request, s: Serving = Depends(serving)) -> Response:
    return await _reply(await s.ollama.generate_lines(body), body.stream, "response")
