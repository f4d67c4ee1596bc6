"""Turn Hermes ``<tool_call>{json}</tool_call>`` blocks in answer content into tool-call events, streaming.

Works on content text only (after reasoning was split off): a ``<tool_call>`` written inside
``<think>`` is part of the reasoning, as in vLLM's hermes parser.

- A block is ``<tool_call>``, a JSON object ``{"name": ..., "arguments": {...}}`` with any whitespace
  around it, and ``</tool_call>``. There may be several, with text before, between and after them.
- ``arguments`` may be an object, JSON text of an object (some models quote it), or absent (``{}``);
  the event carries it as compact JSON text (``json.dumps(obj, ensure_ascii=False)``).
- Whitespace right before an accepted block is dropped, and so is whitespace after one when only
  more blocks or the end of the output follow, so the newlines a model writes around calls do not
  become content of their own; text after a call keeps its separating whitespace. Trailing
  whitespace of content is held back until we know which case it is.
- Policy for a block we cannot accept (invalid JSON, no usable name or arguments, or a name outside
  `tool_names` when that is given): the raw block text, with the whitespace before it, stays in the
  content, and one warning is logged. An unterminated ``<tool_call>`` at the end is content too.
  Nothing is silently lost, and a client sees what the model wrote.
- A half-received ``<tool_call>`` tag is held back until it proves to be one or not.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Collection
from enum import Enum, auto
from typing import Any

from hermesd.models.formats.deltas import Delta, OutputEvent, ToolCallEvent, merge_deltas
from hermesd.models.formats.reasoning import partial_suffix

logger = logging.getLogger(__name__)

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"


def random_call_id(prefix: str = "call_") -> str:
    return prefix + secrets.token_hex(12)


class _State(Enum):
    TEXT = auto()
    IN_CALL = auto()


class ToolCallParser:
    """Feed content text in pieces; get content deltas and tool-call events back, in order."""

    def __init__(
        self,
        tool_names: Collection[str] | None,
        id_prefix: str = "call_",
        id_factory: Callable[[], str] | None = None,
    ) -> None:
        self._tool_names = None if tool_names is None else frozenset(tool_names)
        self._new_id = id_factory or (lambda: random_call_id(id_prefix))
        self._state = _State.TEXT
        self._pending = ""
        self._lead = ""  # whitespace that came right before the open block
        self._after_call = False  # no text since the last accepted block
        self._count = 0

    @property
    def calls_emitted(self) -> int:
        return self._count

    def feed(self, text: str) -> list[OutputEvent]:
        self._pending += text
        out: list[OutputEvent] = []
        self._advance(out)
        return merge_deltas(out)

    def finish(self) -> list[OutputEvent]:
        out: list[OutputEvent] = []
        self._advance(out)
        if self._state is _State.IN_CALL:
            logger.warning("unterminated %s at the end of the output; kept as content", OPEN_TAG)
            out.append(Delta("content", self._lead + OPEN_TAG + self._pending))
        elif not (self._after_call and not self._pending.strip()):
            out.append(Delta("content", self._pending))
        self._pending, self._lead = "", ""
        return merge_deltas(out)

    def _advance(self, out: list[OutputEvent]) -> None:
        while True:
            if self._state is _State.TEXT:
                at = self._pending.find(OPEN_TAG)
                if at >= 0:
                    before = self._pending[:at]
                    text = before.rstrip()
                    if text:
                        out.append(Delta("content", text))
                        self._after_call = False
                    self._lead = before[len(text) :]
                    self._pending = self._pending[at + len(OPEN_TAG) :]
                    self._state = _State.IN_CALL
                    continue
                cut = len(self._pending) - partial_suffix(self._pending, OPEN_TAG)
                text = self._pending[:cut].rstrip()
                if text:
                    out.append(Delta("content", text))
                    self._after_call = False
                self._pending = self._pending[len(text) :]
                return
            else:  # IN_CALL
                at = self._pending.find(CLOSE_TAG)
                if at < 0:
                    return
                body = self._pending[:at]
                self._pending = self._pending[at + len(CLOSE_TAG) :]
                event = self._accept(body)
                if event is None:
                    out.append(Delta("content", self._lead + OPEN_TAG + body + CLOSE_TAG))
                    self._after_call = False
                else:
                    out.append(event)
                    self._after_call = True
                self._state = _State.TEXT
                self._lead = ""

    def _accept(self, body: str) -> ToolCallEvent | None:
        reason, name, arguments = _parse_call(body)
        if reason is None and self._tool_names is not None and name not in self._tool_names:
            reason = f"unknown tool {name!r}"
        if reason is not None:
            logger.warning("tool call kept as content: %s", reason)
            return None
        event = ToolCallEvent(index=self._count, id=self._new_id(), name=name, arguments=arguments)
        self._count += 1
        return event


def _parse_call(body: str) -> tuple[str | None, str, str]:
    """``(reason it is not a call or None, name, arguments JSON text)``."""
    try:
        obj: Any = json.loads(body)
    except ValueError as exc:
        return f"invalid JSON ({exc})", "", ""
    if not isinstance(obj, dict):
        return "not a JSON object", "", ""
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return "no name", "", ""
    arguments = obj.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return f"arguments of {name!r} are not JSON", "", ""
    if not isinstance(arguments, dict):
        return f"arguments of {name!r} are not an object", "", ""
    return None, name, json.dumps(arguments, ensure_ascii=False)


def parse_tool_calls(
    text: str,
    tool_names: Collection[str] | None,
    id_factory: Callable[[], str] | None = None,
) -> tuple[str, list[ToolCallEvent]]:
    """Whole-text form: ``(content, calls)``."""
    parser = ToolCallParser(tool_names, id_factory=id_factory)
    events = parser.feed(text) + parser.finish()
    content = "".join(e.text for e in events if isinstance(e, Delta))
    return content, [e for e in events if isinstance(e, ToolCallEvent)]
