"""The chat completions serving object: request -> prompt -> engine -> OpenAI response.

Built once in the app's lifespan; routes only call `create`. Knows the engine through the
`Engine` protocol only.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from pydantic import ValidationError

from hermesd.models.chat import ChatOptions
from hermesd.models.formats.deltas import Delta, OutputEvent, ToolCallEvent
from hermesd.models.formats.detect import render_chat
from hermesd.models.formats.messages import messages_from_openai
from hermesd.models.formats.output import OutputParser
from hermesd.models.formats.prompt import RenderedPrompt
from hermesd.runtime.engine.protocol import Engine, GenerationRequest, RequestStream
from hermesd.server import request_log
from hermesd.server.constraints import Constraints, resolve_constraints
from hermesd.server.errors import invalid, validation_error
from hermesd.server.model_registry import ModelRegistry, ResolvedModel
from hermesd.server.protocol.chat import ChatCompletionRequest
from hermesd.server.reasoning_controls import resolve_reasoning
from hermesd.server.serving_common import (
    Outcome,
    check_unsupported,
    output_budget,
    sampling_from,
    texts,
    usage_json,
)
from hermesd.server.settings import Settings

log = logging.getLogger(__name__)



Loc = tuple[int | str, ...]


def validated_chat_request(
    body: Mapping[str, Any], rename: Callable[[Loc], Loc] = lambda loc: loc
) -> ChatCompletionRequest:
    """The chat completions request that another API's layer built from its own request. A value chat
    completions refuses is the same 400 a chat request gets, with `rename` turning chat's field path
    into the one the caller sent."""
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error([e | {"loc": rename(tuple(e["loc"]))} for e in exc.errors()]) from None

@dataclass(frozen=True)
class Prepared:
    model: ResolvedModel
    gen: GenerationRequest  # gen.reasoning: the request's one `Reasoning`, shared with the engine
    rendered: RenderedPrompt
    constraints: Constraints


class EventSource(Protocol):
    def feed(self, text: str) -> list[OutputEvent]: ...

    def finish(self) -> list[OutputEvent]: ...


class SingleCallFilter:
    """parallel_tool_calls=false without a grammar: keep the first call, log and drop the rest."""

    def __init__(self, inner: EventSource) -> None:
        self._inner = inner

    def feed(self, text: str) -> list[OutputEvent]:
        return self._keep_first(self._inner.feed(text))

    def finish(self) -> list[OutputEvent]:
        return self._keep_first(self._inner.finish())

    def _keep_first(self, events: list[OutputEvent]) -> list[OutputEvent]:
        out = []
        for ev in events:
            if isinstance(ev, ToolCallEvent) and ev.index > 0:
                log.warning("dropping tool call %s: parallel_tool_calls is false", ev.name)
                continue
            out.append(ev)
        return out


@dataclass
class ChatFormatInfo:
    name: str
    bos_token: str
    eos_token: str
    template: str | None


class ChatServing:
    def __init__(
        self, engine: Engine, registry: ModelRegistry, settings: Settings, chat_format: ChatFormatInfo
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.settings = settings
        self.format = chat_format
        # --reasoning-field: llama-server and LM Studio send `reasoning_content`; vLLM, Ollama and
        # OpenRouter send `reasoning`; "both" serves clients of either kind
        field = settings.reasoning_field
        both = ("reasoning_content", "reasoning")
        self.reasoning_keys: tuple[str, ...] = both if field == "both" else (field,)

    # -- request -> engine request
    async def prepare(self, req: ChatCompletionRequest) -> Prepared:
        check_unsupported(req)
        model = self.registry.resolve(req.model)
        s = self.settings
        if len(req.messages) > s.max_messages:
            raise invalid(f"messages: at most {s.max_messages} messages per request", param="messages")
        stops = req.stop_list()
        if len(stops) > s.max_stop:
            raise invalid(f"stop: at most {s.max_stop} stop sequences", param="stop")
        asked = resolve_reasoning(req, default_think=s.think, default_budget=s.reasoning_budget)
        # pydantic checked the field types; the one converter (shared with tune) does the rest
        messages = messages_from_openai([m.model_dump() for m in req.messages])
        constraints = resolve_constraints(req, max_tools=s.max_tools)
        options = ChatOptions(thinking=asked.thinking, keep_cots=asked.keep_cots, tools=constraints.tools)
        fmt = self.format
        rendered = await asyncio.to_thread(
            render_chat,
            fmt.name,
            messages,
            options,
            bos_token=fmt.bos_token,
            eos_token=fmt.eos_token,
            template=fmt.template,
        )
        reasoning = replace(asked, starts_open=rendered.opened_think, tags=rendered.tags)
        constraints = constraints.after_reasoning(reasoning)
        gen = GenerationRequest(
            prompt=rendered.text,
            max_tokens=output_budget(req.max_completion_tokens or req.max_tokens, s.max_tokens_limit),
            sampling=sampling_from(req),
            stop=stops,
            ignore_eos=req.ignore_eos,
            adapters=((model.adapter, 1.0),) if model.adapter else (),
            reasoning=reasoning,
            grammar=constraints.grammar,
            grammar_trigger=constraints.grammar_trigger,
            request_id=f"chatcmpl-{uuid.uuid4().hex[:24]}",
        )
        return Prepared(model, gen, rendered, constraints)

    async def _start(self, req: ChatCompletionRequest) -> tuple[str, str, RequestStream, EventSource]:
        p = await self.prepare(req)
        request_log.note(model=p.model.id, stream=req.stream, thinking=p.gen.reasoning.thinking)
        stream = await self.engine.submit(p.gen)  # raises before anything is sent
        parser: EventSource = OutputParser.for_request(p.gen.reasoning, tools=p.constraints.parse_tools)
        if p.constraints.single_call:
            parser = SingleCallFilter(parser)
        return p.model.id, p.gen.request_id, stream, parser

    async def start(self, req: ChatCompletionRequest) -> tuple[str, str, RequestStream, EventSource]:
        """Prepare and submit `req`: (model id, request id, engine stream, its output parser). The
        layers of the other APIs (Anthropic Messages, ...) turn the parser's events into their own."""
        return await self._start(req)

    async def create_full(self, req: ChatCompletionRequest) -> dict[str, Any]:
        return await self._collect(*await self._start(req))

    async def create_stream(self, req: ChatCompletionRequest) -> AsyncIterator[dict[str, Any]]:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return self._chunks(*await self._start(req), include_usage)

    async def _collect(
        self, model_id: str, rid: str, stream: RequestStream, parser: EventSource
    ) -> dict[str, Any]:
        reasoning: list[str] = []
        content: list[str] = []
        calls: list[ToolCallEvent] = []
        outcome = Outcome()

        def take(events: list[OutputEvent]) -> None:
            for ev in events:
                if isinstance(ev, Delta):
                    (reasoning if ev.kind == "reasoning" else content).append(ev.text)
                else:
                    calls.append(ev)

        async for text in texts(stream, outcome):
            take(parser.feed(text))
        take(parser.finish())
        message: dict[str, Any] = {"role": "assistant", "content": "".join(content)}
        if reasoning:
            message.update(dict.fromkeys(self.reasoning_keys, "".join(reasoning)))
        reason = outcome.reason
        if calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in calls
            ]
            reason = "tool_calls"
        return {
            "id": rid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_id,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reason}],
            "usage": usage_json(outcome.usage),
        }

    async def _chunks(
        self, model_id: str, rid: str, stream: RequestStream, parser: EventSource, include_usage: bool
    ) -> AsyncIterator[dict[str, Any]]:
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model_id,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }

        def deltas(events: list[OutputEvent]) -> list[dict[str, Any]]:
            out = []
            for ev in events:
                if isinstance(ev, Delta):
                    keys = self.reasoning_keys if ev.kind == "reasoning" else ("content",)
                    out.append(chunk(dict.fromkeys(keys, ev.text)))
                else:
                    tool_calls.append(ev)
                    out.append(
                        chunk(
                            {
                                "tool_calls": [
                                    {
                                        "index": ev.index,
                                        "id": ev.id,
                                        "type": "function",
                                        "function": {"name": ev.name, "arguments": ""},
                                    }
                                ]
                            }
                        )
                    )
                    out.append(
                        chunk({"tool_calls": [{"index": ev.index, "function": {"arguments": ev.arguments}}]})
                    )
            return out

        tool_calls: list[ToolCallEvent] = []
        outcome = Outcome()
        try:
            yield chunk({"role": "assistant", "content": ""})
            async for text in texts(stream, outcome):
                for c in deltas(parser.feed(text)):
                    yield c
            for c in deltas(parser.finish()):
                yield c
        finally:
            await stream.aclose()  # at once when the client went away, not when `texts` is collected
        yield chunk({}, "tool_calls" if tool_calls else outcome.reason)
        if include_usage:
            yield {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model_id,
                "choices": [],
                "usage": usage_json(outcome.usage),
            }
