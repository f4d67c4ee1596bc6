"""A client that goes away aborts its request as soon as the server learns of it, without polling.

The app is driven through raw ASGI with a client whose departure the test decides, and an engine
whose reply never ends by itself: the only way its stream can close is the disconnect. The tests
check the order of events (submitted, client left, stream closed), never how long anything took;
the one timeout is a guard against a hang, far above any reaction time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from hermesd.runtime.engine.protocol import EngineEvent, GenerationRequest, TextEvent
from tests.serving.fake_engine import FakeEngine

HANG_GUARD_S = 60

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
COMPLETION = {"model": "fake-model", "prompt": "hi", "max_tokens": 50}
OLLAMA_CHAT = {"model": "fake-model", "messages": CHAT["messages"], "options": {"num_predict": 50}}
PATHS = {
    "chat": ("/v1/chat/completions", CHAT),
    "completions": ("/v1/completions", COMPLETION),
    "ollama": ("/api/chat", OLLAMA_CHAT),  # an NDJSON stream, not SSE
    "responses": ("/v1/responses", {"model": "fake-model", "input": "hi", "max_output_tokens": 50}),
    "anthropic": ("/v1/messages", CHAT),  # Anthropic's Messages body has these same fields
}


@dataclass
class EndlessStream:
    """One text event, then nothing until closed: a reply that never finishes by itself."""

    order: list[str]
    generating: asyncio.Event
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    prompt_tokens: int = 1  # RequestStream's count, read by the Anthropic layer's message_start

    def __aiter__(self) -> AsyncIterator[EngineEvent]:
        return self._run()

    async def _run(self) -> AsyncIterator[EngineEvent]:
        yield TextEvent("Hel")
        self.order.append("generating")
        self.generating.set()
        await asyncio.Event().wait()  # only a cancellation gets past this
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        if not self.closed.is_set():
            self.order.append("stream closed")
            self.closed.set()


@dataclass
class EndlessEngine(FakeEngine):
    order: list[str] = field(default_factory=list)
    endless: list[EndlessStream] = field(default_factory=list)
    hold_submit: bool = False  # wait in submit() forever, as a request queued for a busy engine would
    submitted: asyncio.Event = field(default_factory=asyncio.Event)
    generating: asyncio.Event = field(default_factory=asyncio.Event)

    async def submit(self, request: GenerationRequest) -> EndlessStream:  # type: ignore[override]
        self.order.append("submitted")
        self.submitted.set()
        if self.hold_submit:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.order.append("submit cancelled")
                raise
        stream = EndlessStream(self.order, self.generating)
        self.endless.append(stream)
        return stream


class Client:
    """The client side of one ASGI request: it sends its body, then leaves when `leave()` is called."""

    def __init__(self, body: dict[str, Any], order: list[str]) -> None:
        self.body = json.dumps(body).encode()
        self.order = order
        self.body_sent = False
        self.gone = asyncio.Event()
        self.listened = asyncio.Event()  # the server is waiting to hear from the client
        self.receives_after_body = 0
        self.sent: list[dict[str, Any]] = []
        self.first_chunk = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        if not self.body_sent:
            self.body_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        self.receives_after_body += 1
        self.listened.set()
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and b"Hel" in message.get("body", b""):
            self.first_chunk.set()

    def leave(self) -> None:
        self.order.append("client left")
        self.gone.set()

    def status(self) -> int | None:
        starts = [m["status"] for m in self.sent if m["type"] == "http.response.start"]
        return starts[0] if starts else None


def scope(path: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }


async def hang_up(
    make_client: Any, engine: EndlessEngine, endpoint: str, stream: bool, once: list[str]
) -> Client:
    """Send one request to the app around `engine`; leave once the named events of the engine or the
    client are set; return when the app is done with the request."""
    path, body = PATHS[endpoint]
    client = Client(dict(body, stream=stream), engine.order)
    ctx = make_client(engine)
    async with ctx:
        task = asyncio.ensure_future(ctx.manager.app(scope(path, client.body), client.receive, client.send))
        for name in once:
            event = getattr(engine, name, None) or getattr(client, name)
            await asyncio.wait_for(event.wait(), HANG_GUARD_S)
        client.leave()
        await asyncio.wait_for(task, HANG_GUARD_S)
    return client


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("endpoint", list(PATHS))
async def test_a_disconnect_cancels_the_request_at_once(
    make_client: Any, endpoint: str, stream: bool
) -> None:
    engine = EndlessEngine()
    # streamed: once the reply has begun (sse-starlette's watch); not streamed: while it is collected
    once = ["generating", "first_chunk" if stream else "listened"]
    client = await hang_up(make_client, engine, endpoint, stream, once)
    assert engine.order == ["submitted", "generating", "client left", "stream closed"]
    if not stream:
        # the server waited on one receive() for the disconnect instead of asking again and again
        assert client.receives_after_body == 1
        assert client.status() == 499  # what the request log records; the client is not there to read it


@pytest.mark.parametrize("stream", [False, True])
async def test_a_disconnect_before_the_engine_took_the_request_cancels_it(
    make_client: Any, stream: bool
) -> None:
    engine = EndlessEngine(hold_submit=True)
    client = await hang_up(make_client, engine, "chat", stream, ["submitted", "listened"])
    assert engine.order == ["submitted", "client left", "submit cancelled"]
    assert engine.endless == [] and client.status() == 499


async def test_a_finished_request_stops_listening_for_the_disconnect(make_client: Any) -> None:
    engine = FakeEngine(reply="Hello there.")
    ctx = make_client(engine)
    order: list[str] = []
    async with ctx:
        client = Client(dict(CHAT, stream=False), order)
        await asyncio.wait_for(
            ctx.manager.app(scope("/v1/chat/completions", client.body), client.receive, client.send),
            HANG_GUARD_S,
        )
    assert client.status() == 200
    body = b"".join(m.get("body", b"") for m in client.sent if m["type"] == "http.response.body")
    assert json.loads(body)["choices"][0]["message"]["content"] == "Hello there."
    assert order == []  # the client never left; the app returned without waiting for it to
