"""Shared pieces of prompt rendering: the result type and the checks every renderer applies first.

Checks happen before any text is produced so that a bad request fails with a `PromptError` naming the
field (``tools[1].function.name``), never with a KeyError deep inside a renderer or a template.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hermesd.models.chat import ROLES, Message, ToolCall
from hermesd.models.formats.errors import PromptError
from hermesd.models.formats.reasoning import THINK_TAGS, ThinkTags

# OpenAI allows [a-zA-Z0-9_-]{1,64}; dots and colons are added because MCP clients name tools
# "server.tool" or "server:tool". Anything else (spaces, quotes, angle brackets) could break the
# <tools> block or the <tool_call> JSON the model is asked to write.
_TOOL_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass(frozen=True)
class RenderedPrompt:
    """A prompt ready to tokenize.

    `opened_think` is true when the text ends inside an open think tag: the model's output then starts
    mid-reasoning (`Reasoning.starts_open`). `tags` are the ones this format's model reasons in.
    """

    text: str
    opened_think: bool = False
    tags: ThinkTags = THINK_TAGS


def validate_tools(tools: Sequence[Any]) -> tuple[dict[str, Any], ...]:
    """Check OpenAI function definitions; return them as ``{"type": "function", "function": {...}}``."""
    checked: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, Mapping):
            raise PromptError(f"{where} must be an object", where)
        kind = tool.get("type", "function")
        if kind != "function":
            raise PromptError(f"{where}.type must be 'function', got {kind!r}", f"{where}.type")
        function = tool.get("function")
        if not isinstance(function, Mapping):
            raise PromptError(f"{where}.function must be an object", f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
            raise PromptError(
                f"{where}.function.name must be 1-64 characters of letters, digits, '_', '-', '.' or ':'",
                f"{where}.function.name",
            )
        if name in seen:
            raise PromptError(f"{where}.function.name {name!r} is defined twice", f"{where}.function.name")
        seen.add(name)
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            raise PromptError(
                f"{where}.function.description must be a string", f"{where}.function.description"
            )
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, Mapping):
            raise PromptError(
                f"{where}.function.parameters must be an object", f"{where}.function.parameters"
            )
        try:
            json.dumps(function)
        except (TypeError, ValueError) as exc:
            raise PromptError(f"{where}.function is not JSON: {exc}", f"{where}.function") from exc
        checked.append({"type": "function", "function": dict(function)})
    return tuple(checked)


def validate_messages(messages: Sequence[Message]) -> None:
    """Reject chats no renderer can express: no messages, unknown roles, nameless tool calls."""
    if not messages:
        raise PromptError("messages must contain at least one message", "messages")
    for i, message in enumerate(messages):
        if message.role not in ROLES:
            raise PromptError(
                f"messages[{i}].role must be one of {', '.join(ROLES)}, got {message.role!r}",
                f"messages[{i}].role",
            )
        if message.tool_calls and message.role != "assistant":
            raise PromptError(
                f"messages[{i}]: only assistant messages carry tool_calls", f"messages[{i}].tool_calls"
            )
        for j, call in enumerate(message.tool_calls):
            if not call.name:
                where = f"messages[{i}].tool_calls[{j}].function.name"
                raise PromptError(f"{where} must not be empty", where)


def arguments_object(call: ToolCall, where: str) -> Any:
    """Parse a tool call's JSON arguments text; an empty string means no arguments."""
    if not call.arguments.strip():
        return {}
    try:
        value = json.loads(call.arguments)
    except ValueError as exc:
        raise PromptError(f"{where} is not valid JSON: {exc}", where) from exc
    if not isinstance(value, dict):
        raise PromptError(f"{where} must be a JSON object", where)
    return value


def message_dicts(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The chat as OpenAI-shaped dicts, the shape Hugging Face chat templates expect.

    Tool-call arguments are handed over parsed (a dict) when they are a JSON object: templates written
    for transformers apply ``tojson`` to them, and those that test ``is string`` handle both.
    """
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        item: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.reasoning_content is not None:
            item["reasoning_content"] = message.reasoning_content
        if message.tool_calls:
            calls = []
            for j, call in enumerate(message.tool_calls):
                try:
                    arguments: Any = arguments_object(
                        call, f"messages[{i}].tool_calls[{j}].function.arguments"
                    )
                except PromptError:
                    arguments = call.arguments
                entry: dict[str, Any] = {
                    "type": "function",
                    "function": {"name": call.name, "arguments": arguments},
                }
                if call.id:
                    entry["id"] = call.id
                calls.append(entry)
            item["tool_calls"] = calls
        if message.tool_call_id is not None:
            item["tool_call_id"] = message.tool_call_id
        if message.name is not None:
            item["name"] = message.name
        out.append(item)
    return out
