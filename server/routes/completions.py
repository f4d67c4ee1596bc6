from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from hermesd.server.protocol.completions import CompletionRequest
from hermesd.server.routes.deps import serving
from hermesd.server.state import Serving
from hermesd.server.streaming import sse_response, until_disconnect

router = APIRouter()


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, s: Serving = Depends(serving)) -> Response:
    if body.stream:
        chunks, _ = await s.completions.create(body)
        return sse_response(chunks)

    async def run() -> tuple[Any, str]:
        return await s.completions.create(body)

    result, _ = await until_disconnect(request, run)
    return JSONResponse(result)
