"""POST /v1/responses, and GET / DELETE of a stored response; the work is in `ResponsesServing`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from hermesd.server.middleware import _presented_key
from hermesd.server.protocol.responses import ResponsesRequest
from hermesd.server.routes.deps import serving
from hermesd.server.state import Serving
from hermesd.server.streaming import sse_response, with_cancellation

router = APIRouter()


def _api_key(request: Request) -> str | None:
    """The key the client presented (the middleware already checked it): stored responses are per key."""
    key = _presented_key(dict(request.headers))
    return key.decode(errors="replace") if key is not None else None


@router.post("/v1/responses")
@with_cancellation
async def create_response(
    body: ResponsesRequest, request: Request, s: Serving = Depends(serving)
) -> Response:
    key = _api_key(request)
    if body.stream:
        return sse_response(await s.responses.create_stream(body, key), path=request.url.path)
    return JSONResponse(await s.responses.create_full(body, key))


@router.get("/v1/responses/{response_id}")
async def get_response(response_id: str, request: Request, s: Serving = Depends(serving)) -> JSONResponse:
    return JSONResponse(s.responses.get(response_id, _api_key(request)))


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, request: Request, s: Serving = Depends(serving)) -> JSONResponse:
    return JSONResponse(s.responses.delete(response_id, _api_key(request)))
