"""The Anthropic Messages API: POST /v1/messages and /v1/messages/count_tokens. Clients send
`x-api-key` (checked by the middleware like a bearer key) and `anthropic-version` (accepted: the
one version of the API these routes speak)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from hermesd.server.protocol.anthropic import CountTokensRequest, MessagesRequest
from hermesd.server.routes.deps import serving
from hermesd.server.state import Serving
from hermesd.server.streaming import sse_response, with_cancellation

router = APIRouter()


@router.post("/v1/messages")
@with_cancellation
async def messages(body: MessagesRequest, request: Request, s: Serving = Depends(serving)) -> Response:
    if body.stream:
        return sse_response(await s.anthropic.create_stream(body), path=request.url.path)
    return JSONResponse(await s.anthropic.create_full(body))


@router.post("/v1/messages/count_tokens")
async def count_tokens(body: CountTokensRequest, s: Serving = Depends(serving)) -> Response:
    return JSONResponse(await s.anthropic.count_tokens(body))
