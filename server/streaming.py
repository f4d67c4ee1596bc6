"""Shared plumbing for streamed and collected responses.

Streaming contract: before the first byte an error is a real HTTP status with the JSON error;
after streaming began it is one `data: {"error": ...}` event followed by `data: [DONE]`.
A client that goes away aborts its request as soon as the server learns of it, without polling:
`with_cancellation` (vLLM's name and design) races the route's handler against a wait for the ASGI
`http.disconnect` message, and once the stream has begun sse-starlette does the same for the SSE
generator. Either way the cancellation closes the engine stream, which aborts generation within one
decode step.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ParamSpec

from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response

from hermesd.server.errors import ANTHROPIC_PATHS, error_body, to_api_error

log = logging.getLogger(__name__)
P = ParamSpec("P")


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def sse_response(
    chunks: AsyncIterator[dict[str, Any]],
    headers: dict[str, str] | None = None,
    *,
    path: str = "",
) -> EventSourceResponse:
    """OpenAI's stream: `data:` lines, then `data: [DONE]`. With the `path` of an API whose events
    are named by their `type` (Anthropic's; OpenAI Responses', whose serving object turns its own
    errors into events), each event carries `event: <type>`, an error is shaped as that API's
    errors are (`error_body`) and there is no [DONE]."""
    named = path.startswith((*ANTHROPIC_PATHS, "/v1/responses"))

    def event(chunk: dict[str, Any]) -> dict[str, str]:
        return {"event": chunk["type"], "data": dumps(chunk)} if named else {"data": dumps(chunk)}

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            async for chunk in chunks:
                yield event(chunk)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # after the first byte, errors travel as an event
            yield event(error_body(to_api_error(exc), path))
        finally:
            await _aclose(chunks)
        if not named:
            yield {"data": "[DONE]"}

    return EventSourceResponse(events(), headers=headers, ping=15, sep="\n")


async def _aclose(it: AsyncIterator[Any]) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        await close()


CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left first; only the log line sees it


async def listen_for_disconnect(request: Request) -> None:
    """Return when the client has gone away: the ASGI server's receive() answers `http.disconnect`
    as soon as it sees the connection close (the body was read before the handler ran)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def with_cancellation(handler: Callable[P, Awaitable[Response]]) -> Callable[P, Awaitable[Response]]:
    """Cancel the route `handler` (which takes `request: Request`) when its client disconnects.

    The handler runs in a task that races `listen_for_disconnect`; the disconnect cancels it wherever it
    waits (rendering, queueing for the engine, collecting a non-streamed reply), and the cancellation
    closes the engine stream. A handler that finished first wins: a stream it returned is then closed by
    sse-starlette, which sees the same disconnect.
    """

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
        request = kwargs["request"]
        assert isinstance(request, Request)
        work = asyncio.ensure_future(handler(*args, **kwargs))
        gone = asyncio.ensure_future(listen_for_disconnect(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(BaseException):  # the client is gone: nobody to tell
                    await work
        if work.cancelled():
            log.info("client disconnected; request cancelled")
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        return work.result()

    return wrapper
