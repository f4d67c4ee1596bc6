"""The Anthropic Messages API as a thin layer over chat completions.

A Messages request becomes the same `ChatCompletionRequest` the chat route takes (its checks,
reasoning switches, renderer, tool-call grammar and output parser are chat's); the output events
become Anthropic's stream events. The whole (non-streamed) reply is those same events folded into
one message, so streamed and whole results cannot disagree.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from hermesd.models.formats.deltas import Delta, OutputEvent, ToolCallEvent
from hermesd.runtime.engine.protocol import Engine, RequestStream
from hermesd.server.errors import invalid
from hermesd.server.protocol.anthropic import (
    CountTokensRequest,
    MessageParam,
    MessagesRequest,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ThinkingDisabled,
    ThinkingEnabled,
    ToolChoiceAny,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolResultBlock,
    ToolUseBlock,
)
from hermesd.server.protocol.chat import ChatCompletionRequest
from hermesd.server.serving_chat import ChatServing, EventSource, validated_chat_request
from hermesd.server.serving_common import Outcome, texts

log = logging.getLogger(__name__)

STOP_REASONS = {"length": "max_tokens"}  # engine finish -> stop_reason; the rest are end_turn


def _text(blocks: str | list[TextBlock]) -> str:
    return blocks if isinstance(blocks, str) else "".join(b.text for b in blocks)


def _user_turn(m: MessageParam, where: str) -> list[dict[str, Any]]:
    """A user message: its tool results become `tool` messages, its text one `user` message,
    in the order they came."""
    if isinstance(m.content, str):
        return [{"role": "user", "content": m.content}]
    out: list[dict[str, Any]] = []
    pending: list[str] = []
    for j, block in enumerate(m.content):
        if isinstance(block, TextBlock):
            pending.append(block.text)
        elif isinstance(block, ToolResultBlock):
            if pending:
                out.append({"role": "user", "content": "".join(pending)})
                pending = []
            out.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": _text(block.content)})
        else:
            raise invalid(
                f"{where}.content[{j}]: a user message cannot carry {block.type}", f"{where}.content"
            )
    if pending or not out:
        out.append({"role": "user", "content": "".join(pending)})
    return out


def _assistant_turn(m: MessageParam, where: str) -> dict[str, Any]:
    if isinstance(m.content, str):
        return {"role": "assistant", "content": m.content}
    text, reasoning, calls = [], [], []
    for j, block in enumerate(m.content):
        if isinstance(block, TextBlock):
            text.append(block.text)
        elif isinstance(block, ThinkingBlock):
            reasoning.append(block.thinking)
        elif isinstance(block, ToolUseBlock):
            calls.append(
                {
                    "id": block.id,
                    "type": "function",
                    "function": {"name": block.name, "arguments": block.input},
                }
            )
        elif not isinstance(block, RedactedThinkingBlock):  # not ours to read: dropped
            raise invalid(f"{where}.content[{j}]: an assistant message cannot carry {block.type}", where)
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
    if reasoning:
        msg["reasoning_content"] = "".join(reasoning)
    if calls:
        msg["tool_calls"] = calls
    return msg


def chat_request(req: CountTokensRequest) -> ChatCompletionRequest:
    """The chat completions request that means what this Messages request means."""
    messages: list[dict[str, Any]] = []
    if req.system:
        messages.append({"role": "system", "content": _text(req.system)})
    for i, m in enumerate(req.messages):
        where = f"messages[{i}]"
        if m.role == "user":
            messages.extend(_user_turn(m, where))
        else:
            messages.append(_assistant_turn(m, where))
    body: dict[str, Any] = {"model": req.model, "messages": messages}
    thinking, effort = req.thinking, req.output_config.effort if req.output_config else None
    if isinstance(thinking, ThinkingDisabled):
        body["reasoning"] = {"enabled": False}  # effort then shapes only the answer: not ours to map
    elif effort is not None:
        body["reasoning_effort"] = effort
    elif thinking is not None:
        body["reasoning"] = {"enabled": True}
    if isinstance(thinking, ThinkingEnabled):  # a number the request gives beats an effort's budget
        body["max_reasoning_tokens"] = thinking.budget_tokens
    for t in req.tools or ():
        if not t.is_custom:  # as llama-server does: clients send them on every request
            log.warning(
                "leaving out tool %r: Anthropic's server tools (%s) are not served here", t.name, t.type
            )
    if req.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.input_schema or {"type": "object"},
                },
            }
            for t in req.tools
            if t.is_custom
        ]
    choice = req.tool_choice
    if choice is not None:
        if isinstance(choice, ToolChoiceNone):
            body["tool_choice"] = "none"
        elif isinstance(choice, ToolChoiceAny):
            body["tool_choice"] = "required"
        elif isinstance(choice, ToolChoiceTool):
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            body["tool_choice"] = "auto"
        if not isinstance(choice, ToolChoiceNone) and choice.disable_parallel_tool_use:
            body["parallel_tool_calls"] = False
    if isinstance(req, MessagesRequest):
        body["max_tokens"] = req.max_tokens
        for name in ("temperature", "top_p", "top_k"):
            if getattr(req, name) is not None:
                body[name] = getattr(req, name)
        if req.stop_sequences:
            body["stop"] = req.stop_sequences
    # a sampling field out of chat completions' range, named as a dotted path
    return validated_chat_request(body, lambda loc: (".".join(str(p) for p in loc),) if loc else loc)


def signature(thinking: str) -> str:
    """The `signature` of a thinking block: clients send it back with the block; we only accept it."""
    return "hermesd-" + hashlib.sha256(thinking.encode()).hexdigest()[:32]


class AnthropicServing:
    def __init__(self, chat: ChatServing, engine: Engine) -> None:
        self.chat = chat
        self.engine = engine

    async def count_tokens(self, req: CountTokensRequest) -> dict[str, Any]:
        """The prompt tokens this request would have: the engine's count of the prompt that
        /v1/messages would render for it, which is what its `usage.input_tokens` reports."""
        prepared = await self.chat.prepare(chat_request(req))
        n = await asyncio.to_thread(self.engine.count_tokens, prepared.gen.prompt)
        return {"input_tokens": n}

    async def create_stream(self, req: MessagesRequest) -> AsyncIterator[dict[str, Any]]:
        return self._events(*await self.chat.start(chat_request(req)))

    async def create_full(self, req: MessagesRequest) -> dict[str, Any]:
        return await fold(self._events(*await self.chat.start(chat_request(req))))

    async def _events(
        self, model_id: str, rid: str, stream: RequestStream, parser: EventSource
    ) -> AsyncIterator[dict[str, Any]]:
        msg_id = "msg_" + uuid.uuid4().hex[:24]
        blocks = _BlockWriter()
        outcome = Outcome()
        try:
            yield {
                "type": "message_start",
                "message": {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model_id,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": stream.prompt_tokens, "output_tokens": 0},
                },
            }
            yield {"type": "ping"}
            async for text in texts(stream, outcome):
                for event in blocks.take(parser.feed(text)):
                    yield event
            for event in [*blocks.take(parser.finish()), *blocks.close()]:
                yield event
        finally:
            await stream.aclose()  # at once when the client went away
        finish = outcome.finish
        assert finish is not None
        stop_sequence = finish.stop_sequence
        if blocks.tool_calls:
            reason = "tool_use"
        elif stop_sequence:
            reason = "stop_sequence"
        else:
            reason = STOP_REASONS.get(finish.reason, "end_turn")
        yield {
            "type": "message_delta",
            "delta": {
                "stop_reason": reason,
                "stop_sequence": stop_sequence if reason == "stop_sequence" else None,
            },
            "usage": {
                "input_tokens": finish.usage.prompt_tokens,
                "output_tokens": finish.usage.completion_tokens,
            },
        }
        yield {"type": "message_stop"}


class _BlockWriter:
    """Output events -> content block events: a block opens when the kind of output changes."""

    def __init__(self) -> None:
        self.index = -1
        self.open: str | None = None  # "thinking" | "text"
        self.thinking: list[str] = []
        self.tool_calls = 0

    def take(self, events: list[OutputEvent]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for ev in events:
            if isinstance(ev, Delta):
                kind = "thinking" if ev.kind == "reasoning" else "text"
                if self.open != kind:
                    out += self.close()
                    out.append(
                        self._start(
                            {"type": kind, kind: ""} | ({"signature": ""} if kind == "thinking" else {})
                        )
                    )
                    self.open = kind
                if kind == "thinking":
                    self.thinking.append(ev.text)
                    delta = {"type": "thinking_delta", "thinking": ev.text}
                else:
                    delta = {"type": "text_delta", "text": ev.text}
                out.append({"type": "content_block_delta", "index": self.index, "delta": delta})
            else:
                out += self.close()
                out += self._tool_use(ev)
        return out

    def _start(self, block: dict[str, Any]) -> dict[str, Any]:
        self.index += 1
        return {"type": "content_block_start", "index": self.index, "content_block": block}

    def _tool_use(self, ev: ToolCallEvent) -> list[dict[str, Any]]:
        self.tool_calls += 1
        start = self._start({"type": "tool_use", "id": ev.id, "name": ev.name, "input": {}})
        delta = {"type": "input_json_delta", "partial_json": ev.arguments}
        return [
            start,
            {"type": "content_block_delta", "index": self.index, "delta": delta},
            {"type": "content_block_stop", "index": self.index},
        ]

    def close(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.open == "thinking":
            sig = {"type": "signature_delta", "signature": signature("".join(self.thinking))}
            out.append({"type": "content_block_delta", "index": self.index, "delta": sig})
            self.thinking = []
        if self.open is not None:
            out.append({"type": "content_block_stop", "index": self.index})
        self.open = None
        return out


async def fold(events: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    """The message a stream of events describes (what the SDK's stream accumulator builds)."""
    message: dict[str, Any] = {}
    partial: dict[int, list[str]] = {}
    async for ev in events:
        kind = ev["type"]
        if kind == "message_start":
            message = ev["message"]
        elif kind == "content_block_start":
            message["content"].append(dict(ev["content_block"]))
        elif kind == "content_block_delta":
            block, delta = message["content"][ev["index"]], ev["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            else:
                partial.setdefault(ev["index"], []).append(delta["partial_json"])
        elif kind == "content_block_stop" and ev["index"] in partial:
            message["content"][ev["index"]]["input"] = json.loads("".join(partial.pop(ev["index"])))
        elif kind == "message_delta":
            message.update(ev["delta"])
            message["usage"] = ev["usage"]
    return message
