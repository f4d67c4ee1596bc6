"""The OpenAI Responses API as a thin layer over chat completions.

A Responses request (its `input` items after the stored conversation of `previous_response_id`)
becomes the same `ChatCompletionRequest` the chat route takes, so the checks, reasoning switches,
renderer, tool-call grammar and output parser are chat's. The parser's events become output items
and the standard stream events; the whole (non-streamed) response is the `response` of the last of
those same events, so streamed and whole results cannot disagree.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from hermesd.models.formats.deltas import Delta, OutputEvent, ToolCallEvent
from hermesd.runtime.engine.protocol import RequestStream, Usage
from hermesd.server.errors import APIError, invalid, to_api_error
from hermesd.server.protocol.chat import ChatCompletionRequest
from hermesd.server.protocol.responses import (
    UNSUPPORTED_IF_SET,
    ContentPart,
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    ReasoningItem,
    ResponsesRequest,
)
from hermesd.server.response_store import ResponseStore
from hermesd.server.serving_chat import ChatServing, EventSource, validated_chat_request
from hermesd.server.serving_common import Outcome, texts
from hermesd.server.settings import Settings

log = logging.getLogger(__name__)

# chat request field -> the Responses field a client sent it as (for error messages)
_PARAMS = {
    "max_tokens": "max_output_tokens",
    "reasoning_effort": "reasoning.effort",
    "response_format": "text.format",
    "messages": "input",
}
_TEXT_PARTS = ("input_text", "output_text", "text", "reasoning_text", "summary_text")


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _text(content: str | list[ContentPart], where: str) -> str:
    if isinstance(content, str):
        return content
    for j, part in enumerate(content):
        if part.type not in _TEXT_PARTS or part.text is None:
            at = f"{where}[{j}]"
            raise invalid(f"{at}: only text content is supported, not {part.type!r}", param=at)
    return "".join(p.text or "" for p in content)


def _assistant(messages: list[dict[str, Any]], *, fresh: bool = False) -> dict[str, Any]:
    """The assistant turn that items of the model's output join: the last message when it is one
    (reasoning, text and calls of one reply are separate items), else a new one."""
    last = messages[-1] if messages else None
    if last is None or last["role"] != "assistant" or fresh:
        last = {"role": "assistant", "content": ""}
        messages.append(last)
    return last


def input_messages(items: str | list[Any]) -> list[dict[str, Any]]:
    """Responses input items -> chat messages (decoded-JSON form, as the chat route receives them)."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if isinstance(item, MessageItem):
            text = _text(item.content, f"{where}.content")
            if item.role == "assistant":
                _assistant(out)["content"] += text
            else:
                out.append({"role": item.role, "content": text})
        elif isinstance(item, FunctionCallItem):
            function = {"name": item.name, "arguments": item.arguments}
            call = {"id": item.call_id, "type": "function", "function": function}
            _assistant(out).setdefault("tool_calls", []).append(call)
        elif isinstance(item, FunctionCallOutputItem):
            text = _text(item.output, f"{where}.output")
            out.append({"role": "tool", "tool_call_id": item.call_id, "content": text})
        elif isinstance(item, ReasoningItem):
            parts = item.content or item.summary
            turn = _assistant(out, fresh=bool(out and (out[-1].get("content") or out[-1].get("tool_calls"))))
            turn["reasoning_content"] = _text(parts, f"{where}.content")
        else:
            raise invalid(
                f"{where}.type: input items of type {item.type!r} are not supported", f"{where}.type"
            )
    return out


def _tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Function tools in chat's shape. Hosted tools (web search, image generation, ...) and Codex's
    `namespace` and `custom` tools are left out, as llama-server does: this model can only call
    functions, and Codex sends such tools along with its function tools on every request."""
    if tools is None:
        return None
    out = []
    for tool in tools:
        if tool.get("type") != "function":
            log.warning("ignoring a tool of type %r: only function tools are served", tool.get("type"))
            continue
        fn = {k: tool[k] for k in ("name", "description", "parameters") if tool.get(k) is not None}
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    if not isinstance(choice, dict):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise invalid(
        'tool_choice must be "none", "auto", "required" or {"type": "function", "name": ...}',
        param="tool_choice",
    )


def _response_format(req: ResponsesRequest) -> dict[str, Any] | None:
    fmt = req.text.format if req.text else None
    if fmt is None or fmt.get("type") != "json_schema":
        return fmt
    if not isinstance(fmt.get("schema"), dict):
        raise invalid("text.format.schema must be a JSON schema object", param="text.format.schema")
    spec = {k: fmt[k] for k in ("name", "schema", "strict") if k in fmt}
    return {"type": "json_schema", "json_schema": spec}


def chat_request(req: ResponsesRequest, history: tuple[dict[str, Any], ...]) -> ChatCompletionRequest:
    """The chat request that answers `req`, after the conversation `history`."""
    for name, value in req.extra_fields().items():
        if name in UNSUPPORTED_IF_SET and value not in (None, False, 0, {}, []):
            raise invalid(f"{name}: {UNSUPPORTED_IF_SET[name]}", param=name, code="unsupported_parameter")
    system = [{"role": "system", "content": req.instructions}] if req.instructions else []
    messages = [*system, *history, *input_messages(req.input)]
    if not messages:
        raise invalid("input: at least one input item is required", param="input")
    body: dict[str, Any] = {
        "model": req.model,
        "messages": messages,
        "max_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "tools": _tools(req.tools),
        "tool_choice": _tool_choice(req.tool_choice),
        "parallel_tool_calls": req.parallel_tool_calls,
        "response_format": _response_format(req),
        "reasoning_effort": req.reasoning.effort if req.reasoning else None,
    }
    # an error names the Responses field it came from (chat's message indexes mean nothing here)
    return validated_chat_request(
        {k: v for k, v in body.items() if v is not None},
        lambda loc: (_PARAMS.get(str(loc[0]), str(loc[0])),) if loc else loc,
    )


def _renamed(err: APIError) -> APIError:
    """A chat error names chat's fields; name the Responses field the client sent instead."""
    if err.param:
        head, dot, rest = err.param.partition(".")
        name = head.split("[")[0]
        if name in _PARAMS and name != "messages":
            err.param = _PARAMS[name] + (dot + rest if name != "response_format" else "")
    return err


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


class OutputItems:
    """Parser events -> output items, and the stream events that build them (no sequence numbers)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the reasoning or message item text is going to

    def take(self, events: list[OutputEvent]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for ev in events:
            if isinstance(ev, Delta):
                out += self._text(ev)
            else:
                out += self.close_open()
                out += self._call(ev)
        return out

    def _text(self, ev: Delta) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        kind = "reasoning" if ev.kind == "reasoning" else "message"
        if self._open is None or self._open["type"] != kind:
            out += self.close_open()
            out += self._open_item(kind)
        item = self._open
        assert item is not None
        item["content"][0]["text"] += ev.text
        delta = "response.reasoning_text.delta" if kind == "reasoning" else "response.output_text.delta"
        extra: dict[str, Any] = {} if kind == "reasoning" else {"logprobs": []}
        return [*out, {"type": delta, **self._where(item), "content_index": 0, "delta": ev.text, **extra}]

    def _where(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"item_id": item["id"], "output_index": self.items.index(item)}

    def _open_item(self, kind: str) -> list[dict[str, Any]]:
        if kind == "reasoning":
            item: dict[str, Any] = {"id": _new_id("rs"), "type": "reasoning", "summary": []}
            part: dict[str, Any] = {"type": "reasoning_text", "text": ""}
        else:
            item = {"id": _new_id("msg"), "type": "message", "role": "assistant"}
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        item.update(status="in_progress", content=[])
        self.items.append(item)
        added = {
            "type": "response.output_item.added",
            "output_index": len(self.items) - 1,
            "item": _copy(item),
        }
        item["content"].append(part)
        self._open = item
        return [
            added,
            {
                "type": "response.content_part.added",
                **self._where(item),
                "content_index": 0,
                "part": dict(part),
            },
        ]

    def close_open(self) -> list[dict[str, Any]]:
        item, self._open = self._open, None
        if item is None:
            return []
        item["status"] = "completed"
        part = item["content"][0]
        done = "response.reasoning_text.done" if item["type"] == "reasoning" else "response.output_text.done"
        extra: dict[str, Any] = {} if item["type"] == "reasoning" else {"logprobs": []}
        where = self._where(item)
        return [
            {"type": done, **where, "content_index": 0, "text": part["text"], **extra},
            {"type": "response.content_part.done", **where, "content_index": 0, "part": dict(part)},
            {"type": "response.output_item.done", "output_index": where["output_index"], "item": _copy(item)},
        ]

    def _call(self, ev: ToolCallEvent) -> list[dict[str, Any]]:
        item = {
            "id": _new_id("fc"),
            "type": "function_call",
            "status": "in_progress",
            "call_id": ev.id,
            "name": ev.name,
            "arguments": "",
        }
        self.items.append(item)
        added = {
            "type": "response.output_item.added",
            "output_index": len(self.items) - 1,
            "item": dict(item),
        }
        item.update(arguments=ev.arguments, status="completed")
        where = self._where(item)
        return [
            added,
            {"type": "response.function_call_arguments.delta", **where, "delta": ev.arguments},
            {
                "type": "response.function_call_arguments.done",
                **where,
                "name": ev.name,
                "arguments": ev.arguments,
            },
            {"type": "response.output_item.done", "output_index": where["output_index"], "item": dict(item)},
        ]

    def finish(self) -> list[dict[str, Any]]:
        out = self.close_open()
        if not any(i["type"] in ("message", "function_call") for i in self.items):
            out += self._open_item("message") + self.close_open()  # an answer, even an empty one
        return out

    def as_message(self) -> dict[str, Any]:
        """The reply as one chat assistant message (what `previous_response_id` continues from)."""
        message: dict[str, Any] = {"role": "assistant", "content": ""}
        for item in self.items:
            if item["type"] == "reasoning":
                message["reasoning_content"] = item["content"][0]["text"]
            elif item["type"] == "message":
                message["content"] += item["content"][0]["text"]
            else:
                call = {"name": item["name"], "arguments": item["arguments"]}
                message.setdefault("tool_calls", []).append(
                    {"id": item["call_id"], "type": "function", "function": call}
                )
        return message


def _copy(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "content": [dict(p) for p in item["content"]]}


class ResponsesServing:
    def __init__(self, chat: ChatServing, settings: Settings, store: ResponseStore | None = None) -> None:
        self.chat = chat
        self.settings = settings
        self.store = store or ResponseStore()

    def _namespace(self, api_key: str | None) -> str:
        """Each configured API key has its own stored responses; without keys there is one store."""
        return api_key if api_key and api_key in self.settings.all_api_keys() else ""

    async def create_stream(
        self, req: ResponsesRequest, api_key: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        """The stream events; an error once they began ends them with `error` and `response.failed`."""
        return _errors_as_events(
            self._events(req, self._namespace(api_key), *await self._start(req, api_key))
        )

    async def create_full(self, req: ResponsesRequest, api_key: str | None) -> dict[str, Any]:
        """The `response` of the last stream event (an error is an HTTP error)."""
        last: dict[str, Any] = {}
        async for event in self._events(req, self._namespace(api_key), *await self._start(req, api_key)):
            last = event
        return dict(last["response"])

    def get(self, response_id: str, api_key: str | None) -> dict[str, Any]:
        stored = self.store.get(self._namespace(api_key), response_id)
        if stored is None:
            raise _not_found(response_id)
        return stored.response

    def delete(self, response_id: str, api_key: str | None) -> dict[str, Any]:
        if not self.store.delete(self._namespace(api_key), response_id):
            raise _not_found(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    async def _start(
        self, req: ResponsesRequest, api_key: str | None
    ) -> tuple[list[dict[str, Any]], str, RequestStream, EventSource]:
        history: tuple[dict[str, Any], ...] = ()
        if req.previous_response_id:
            stored = self.store.get(self._namespace(api_key), req.previous_response_id)
            if stored is None:
                raise invalid(
                    f"Previous response with id '{req.previous_response_id}' not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            history = stored.history
        chat = chat_request(req, history)
        try:
            model_id, _, stream, parser = await self.chat.start(chat)
        except APIError as exc:
            raise _renamed(exc) from None
        system = 1 if req.instructions else 0  # instructions are not carried to the next response
        return [m.model_dump(exclude_none=True) for m in chat.messages[system:]], model_id, stream, parser

    async def _events(
        self,
        req: ResponsesRequest,
        namespace: str,
        conversation: list[dict[str, Any]],
        model_id: str,
        stream: RequestStream,
        parser: EventSource,
    ) -> AsyncIterator[dict[str, Any]]:
        response = self._response(req, model_id)
        seq = 0

        def numbered(event: dict[str, Any]) -> dict[str, Any]:
            nonlocal seq
            seq += 1
            return {**event, "sequence_number": seq - 1}

        items = OutputItems()
        outcome = Outcome()
        try:
            yield numbered({"type": "response.created", "response": dict(response)})
            yield numbered({"type": "response.in_progress", "response": dict(response)})
            async for text in texts(stream, outcome):
                for event in items.take(parser.feed(text)):
                    yield numbered(event)
            for event in [*items.take(parser.finish()), *items.finish()]:
                yield numbered(event)
        finally:
            await stream.aclose()  # at once when the client went away
        cut = outcome.reason == "length"
        response.update(
            status="incomplete" if cut else "completed",
            incomplete_details={"reason": "max_output_tokens"} if cut else None,
            output=items.items,
            usage=usage_json(outcome.usage),
        )
        if req.store:
            self.store.put(namespace, response, [*conversation, items.as_message()])
        yield numbered({"type": "response.incomplete" if cut else "response.completed", "response": response})

    @staticmethod
    def _response(req: ResponsesRequest, model_id: str) -> dict[str, Any]:
        text_format = (req.text.format if req.text else None) or {"type": "text"}
        return {
            "id": _new_id("resp"),
            "object": "response",
            "created_at": int(time.time()),
            "status": "in_progress",
            "error": None,
            "incomplete_details": None,
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "model": model_id,
            "output": [],
            "parallel_tool_calls": req.parallel_tool_calls is not False,
            "previous_response_id": req.previous_response_id,
            "reasoning": {"effort": req.reasoning.effort if req.reasoning else None, "summary": None},
            "store": req.store,
            "temperature": req.temperature,
            "text": {"format": text_format},
            "tool_choice": req.tool_choice or "auto",
            "tools": req.tools or [],
            "top_p": req.top_p,
            "truncation": "disabled",
            "usage": None,
            "user": req.user,
            "metadata": req.metadata or {},
        }


def _not_found(response_id: str) -> APIError:
    return APIError(
        404,
        f"Response with id '{response_id}' not found.",
        type="invalid_request_error",
        param="response_id",
        code="not_found",
    )


async def _errors_as_events(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """OpenAI's contract once a Responses stream began: an `error` event, then `response.failed`."""
    last: dict[str, Any] = {}
    try:
        async for event in events:
            last = event
            yield event
    except Exception as exc:
        err = to_api_error(exc)
        seq = last.get("sequence_number", -1) + 1
        yield {
            "type": "error",
            "code": err.code,
            "message": err.message,
            "param": err.param,
            "sequence_number": seq,
        }
        response = {
            **last.get("response", {}),
            "status": "failed",
            "error": {"code": err.code or err.type, "message": err.message},
        }
        yield {"type": "response.failed", "response": response, "sequence_number": seq + 1}
    finally:
        await events.aclose()  # type: ignore[attr-defined]
