from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from hermesd.server.protocol.chat import ChatCompletionRequest
from hermesd.server.routes.deps import serving
from hermesd.server.state import Serving
from hermesd.server.streaming import sse_response, with_cancellation

router = APIRouter()


@router.post("/v1/chat/completions")
@with_cancellation
async def chat_completions(
    body: ChatCompletionRequest, request: Request, s: Serving = Depends(serving)
) -> Response:
    if body.stream:
        return sse_response(await s.chat.create_stream(body))
    return JSONResponse(await s.chat.create_full(body))
