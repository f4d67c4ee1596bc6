"""Shared plumbing for streamed and collected responses.

Streaming contract: before the first byte an error is a real HTTP status with the JSON error;
after streaming began it is one `data: {"error": ...}` event followed by `data: [DONE]`.
A client that disconnects cancels the generator (sse-starlette does that), which closes the
engine stream and so aborts generation within one decode step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request

from hermesd.server.errors import to_api_error

log = logging.getLogger(__name__)
T = TypeVar("T")


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def sse_response(
    chunks: AsyncIterator[dict[str, Any]], headers: dict[str, str] | None = None
) -> EventSourceResponse:
    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            async for chunk in chunks:
                yield {"data": dumps(chunk)}
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # after the first byte, errors travel as an event
            yield {"data": dumps(to_api_error(exc).body())}
        finally:
            await _aclose(chunks)
        yield {"data": "[DONE]"}

    return EventSourceResponse(events(), headers=headers, ping=15, sep="\n")


async def _aclose(it: AsyncIterator[Any]) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        await close()


async def until_disconnect(request: Request, work: Callable[[], Awaitable[T]]) -> T:
    """Run `work` for a non-streaming response, cancelling it if the client goes away."""
    task = asyncio.ensure_future(work())
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                with contextlib.suppress(BaseException):  # the client is gone: nobody to tell
                    await task
                raise asyncio.CancelledError("client disconnected")
    finally:
        if not task.done():
            task.cancel()
