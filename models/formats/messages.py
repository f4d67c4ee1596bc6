"""OpenAI chat messages (decoded JSON) -> `Message`s: the one conversion, for requests and training data.

The server converts every chat request with it (after pydantic checked the field types) and tune
converts every line of training data; so a turn means the same to the model when it is served and when
it is trained on. Problems raise `PromptError` naming the field (``messages[2].tool_calls[0]...``).

Rules:
- ``developer`` is ``system``; content is a string, null, or a list of text parts (text only: the
  model reads no images or audio). A ``user`` or ``system`` message needs content.
- Only assistant messages carry ``tool_calls``; arguments are JSON text or a JSON object (kept as
  text); missing arguments are ``{}``.
- Only assistant messages carry reasoning, given as ``reasoning_content`` or ``reasoning`` (the
  names vLLM and OpenRouter use), or inline as a ``<think>...</think>`` block that opens the content.
  Inline reasoning is split off exactly as the output parser splits the model's text, so a turn
  becomes the same `Message` however the client sent its reasoning back; a separate reasoning is
  stripped and the content after it loses its leading whitespace, as the parser's would.
- ``strict`` (training data) refuses what a chat history may carry but a training example must not:
  a think block that is never closed or comes twice or after the answer, and reasoning given both
  inline and separately. Without it (requests) the content is taken as it is in those cases: a
  separately given reasoning wins and the content is not split, an unclosed think is all reasoning.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, cast

from hermesd.models.chat import ROLES, Message, Role, ToolCall
from hermesd.models.formats.errors import PromptError
from hermesd.models.formats.reasoning import THINK_TAGS, split_reasoning


def messages_from_openai(items: Sequence[Any], *, strict: bool = False) -> list[Message]:
    """Convert OpenAI chat messages (dicts as decoded from JSON) into `Message`s."""
    if not isinstance(items, Sequence) or isinstance(items, str) or not items:
        raise PromptError("messages must be a non-empty list", "messages")
    return [_message(item, f"messages[{i}]", strict) for i, item in enumerate(items)]


def _message(item: Any, where: str, strict: bool) -> Message:
    if not isinstance(item, Mapping):
        raise PromptError(f"{where} must be an object", where)
    role = item.get("role")
    if role == "developer":
        role = "system"
    if role not in ROLES:
        expected = ", ".join(ROLES)
        raise PromptError(f"{where}: unknown role {role!r} (expected one of {expected})", f"{where}.role")
    raw_content = item.get("content")
    if raw_content is None and role in ("user", "system"):
        raise PromptError(f"{where}.content: a {role} message needs content", f"{where}.content")
    content = message_text(raw_content, f"{where}.content")
    raw_calls = item.get("tool_calls")
    if raw_calls and role != "assistant":
        at = f"{where}.tool_calls"
        raise PromptError(f"{at}: only assistant messages carry tool calls", at)
    reasoning = None
    if role == "assistant":
        content, reasoning = assistant_reasoning(
            content,
            item.get("reasoning_content") or item.get("reasoning"),
            where=f"{where}.content",
            reasoning_where=f"{where}.reasoning_content",
            strict=strict,
        )
    return Message(
        role=cast(Role, role),
        content=content,
        reasoning_content=reasoning,
        tool_calls=_tool_calls(raw_calls, where),
        tool_call_id=_str_or_none(item.get("tool_call_id")),
        name=_str_or_none(item.get("name")),
    )


def message_text(value: Any, where: str) -> str:
    """A message's text: a string, null (empty), or the text parts of a content list joined."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for i, part in enumerate(value):
            text = part.get("text") if isinstance(part, Mapping) and part.get("type") == "text" else None
            if not isinstance(text, str):
                raise PromptError(f"{where}[{i}]: only text content parts are supported", f"{where}[{i}]")
            parts.append(text)
        return "".join(parts)
    raise PromptError(f"{where} must be a string or a list of text parts", where)


def assistant_reasoning(
    content: str, separate: Any, *, where: str, reasoning_where: str, strict: bool = False
) -> tuple[str, str | None]:
    """An assistant turn's ``(content, reasoning or None)``, from its content (`where`) and its
    separately given reasoning (`reasoning_where`; None when absent). See the module's rules."""
    tags = THINK_TAGS
    given = message_text(separate, reasoning_where).strip()
    if given and not strict:
        return content.lstrip(), given
    inline, answer = split_reasoning(content, tags=tags)
    if strict:
        if tags.open in answer or tags.close in answer:
            raise PromptError(
                f"{where}: a {tags.open} block must come first in an assistant turn, and only once", where
            )
        if inline is not None and tags.close not in content:
            raise PromptError(f"{where}: {tags.open} is never closed with {tags.close}", where)
        if inline is not None and given:
            raise PromptError(
                f"{where}: reasoning given twice (inline {tags.open} and reasoning_content)", where
            )
    if inline is None:
        return (content.lstrip(), given) if given else (content, None)
    return answer, inline.strip() or None


def _tool_calls(raw: Any, where: str) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise PromptError(f"{where}.tool_calls must be a list", f"{where}.tool_calls")
    calls = []
    for j, call in enumerate(raw):
        at = f"{where}.tool_calls[{j}].function"
        fn = call.get("function") if isinstance(call, Mapping) else None
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if not isinstance(name, str) or not name:
            raise PromptError(f"{at}.name must be a non-empty string", f"{at}.name")
        args = cast(Mapping[str, Any], fn).get("arguments")
        if args is None:
            args = "{}"
        elif isinstance(args, Mapping):
            args = json.dumps(args, ensure_ascii=False)
        elif not isinstance(args, str):
            raise PromptError(f"{at}.arguments must be JSON text or an object", f"{at}.arguments")
        calls.append(ToolCall(name=name, arguments=args, id=_str_or_none(call.get("id")) or ""))
    return tuple(calls)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
