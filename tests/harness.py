"""One way to run a chat request streaming or not and get back the same summary.

Every behaviour test is parametrised over `stream` and compares `ChatResult`s, so the streamed
and the collected paths can never drift apart unnoticed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class ChatResult:
    content: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    chunks: int = 0
    error: dict[str, Any] | None = None


def parse_sse(text: str) -> list[Any]:
    events = []
    for line in text.splitlines():
        if line.startswith("data:"):
            data = line[5:].strip()
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def summarize_chunks(events: list[Any]) -> ChatResult:
    out = ChatResult()
    calls: dict[int, dict[str, Any]] = {}
    assert events and events[-1] == "[DONE]", f"stream did not end with [DONE]: {events[-3:]}"
    for ev in events[:-1]:
        if "error" in ev:
            out.error = ev["error"]
            continue
        out.chunks += 1
        if ev.get("usage"):
            out.usage = ev["usage"]
        for choice in ev.get("choices", []):
            delta = choice.get("delta", {})
            out.content += delta.get("content") or ""
            out.reasoning += delta.get("reasoning_content") or ""
            for tc in delta.get("tool_calls") or []:
                slot = calls.setdefault(tc["index"], {"id": None, "name": "", "arguments": ""})
                slot["id"] = tc.get("id") or slot["id"]
                fn = tc.get("function") or {}
                slot["name"] += fn.get("name") or ""
                slot["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                out.finish_reason = choice["finish_reason"]
    out.tool_calls = [calls[i] for i in sorted(calls)]
    return out


def summarize_message(body: dict[str, Any]) -> ChatResult:
    choice = body["choices"][0]
    msg = choice["message"]
    calls = [
        {"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
        for c in msg.get("tool_calls") or []
    ]
    return ChatResult(
        content=msg.get("content") or "",
        reasoning=msg.get("reasoning_content") or "",
        finish_reason=choice["finish_reason"],
        usage=body.get("usage"),
        tool_calls=calls,
    )


async def chat_http(client: httpx.AsyncClient, body: dict[str, Any], stream: bool) -> ChatResult:
    """POST /v1/chat/completions through httpx (in-process ASGI or real socket)."""
    payload = dict(body, stream=stream)
    if stream:
        payload.setdefault("stream_options", {"include_usage": True})
    r = await client.post("/v1/chat/completions", json=payload)
    assert r.status_code == 200, r.text
    if stream:
        return summarize_chunks(parse_sse(r.text))
    return summarize_message(r.json())


def chat_openai(client: Any, stream: bool, **kwargs: Any) -> ChatResult:
    """The same through the official `openai` client (sync)."""
    if not stream:
        resp = client.chat.completions.create(stream=False, **kwargs)
        return summarize_message(resp.model_dump())
    out = ChatResult()
    calls: dict[int, dict[str, Any]] = {}
    for chunk in client.chat.completions.create(
        stream=True, stream_options={"include_usage": True}, **kwargs
    ):
        out.chunks += 1
        if chunk.usage is not None:
            out.usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            delta = choice.delta
            out.content += delta.content or ""
            out.reasoning += getattr(delta, "reasoning_content", None) or ""
            for tc in delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                slot["id"] = tc.id or slot["id"]
                if tc.function is not None:
                    slot["name"] += tc.function.name or ""
                    slot["arguments"] += tc.function.arguments or ""
            if choice.finish_reason:
                out.finish_reason = choice.finish_reason
    out.tool_calls = [calls[i] for i in sorted(calls)]
    return out
