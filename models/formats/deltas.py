"""What the output parsers emit: pieces of reasoning or content text, and finished tool calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias


@dataclass(frozen=True)
class Delta:
    """A piece of model output text, already sorted into reasoning or answer content. Never empty."""

    kind: Literal["reasoning", "content"]
    text: str


@dataclass(frozen=True)
class ToolCallEvent:
    """One complete tool call. `arguments` is compact JSON text of the arguments object."""

    index: int
    id: str
    name: str
    arguments: str


OutputEvent: TypeAlias = Delta | ToolCallEvent


def merge_deltas(events: list[OutputEvent]) -> list[OutputEvent]:
    """Join neighbouring deltas of the same kind and drop empty ones, keeping the order of events."""
    merged: list[OutputEvent] = []
    for event in events:
        if isinstance(event, Delta):
            if not event.text:
                continue
            last = merged[-1] if merged else None
            if isinstance(last, Delta) and last.kind == event.kind:
                merged[-1] = Delta(event.kind, last.text + event.text)
                continue
        merged.append(event)
    return merged
