from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from hermesd.server.protocol.completions import CompletionRequest
from hermesd.server.routes.deps import serving
from hermesd.server.state import Serving
from hermesd.server.streaming import sse_response, with_cancellation

router = APIRouter()


@router.post("/v1/completions")
@with_cancellation
async def completions(body: CompletionRequest, request: Request, s: Serving = Depends(serving)) -> Response:
    if body.stream:
        return sse_response(await s.completions.create_stream(body))
    return JSONResponse(await s.completions.create_full(body))
