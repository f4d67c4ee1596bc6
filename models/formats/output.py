"""The whole output pipeline for one request: reasoning split, then tool-call parsing of the content.

The server feeds the engine's text pieces in and turns the events into OpenAI deltas; the engine reads
`in_reasoning` to enforce a reasoning-token budget.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from hermesd.models.formats.deltas import Delta, OutputEvent, merge_deltas
from hermesd.models.formats.reasoning import THINK_TAGS, Reasoning, ReasoningParser, ThinkTags
from hermesd.models.formats.toolcalls import ToolCallParser


class OutputParser:
    """`reasoning=False` is inline mode: no split, every tag stays in the content.
    `tools=None` turns tool parsing off: ``<tool_call>`` text stays content."""

    def __init__(
        self,
        *,
        reasoning: bool = True,
        start_in_reasoning: bool = False,
        tags: ThinkTags = THINK_TAGS,
        tools: Collection[str] | None = None,
        id_factory: Callable[[], str] | None = None,
    ) -> None:
        self._reasoning = ReasoningParser(start_in_reasoning, tags) if reasoning else None
        self._tools = None if tools is None else ToolCallParser(tools, id_factory=id_factory)

    @classmethod
    def for_request(cls, reasoning: Reasoning, tools: Collection[str] | None = None) -> OutputParser:
        """The parser of one request's output, as its `Reasoning` says."""
        return cls(
            reasoning=reasoning.separate,
            start_in_reasoning=reasoning.starts_open,
            tags=reasoning.tags,
            tools=tools,
        )

    @property
    def in_reasoning(self) -> bool:
        return self._reasoning is not None and self._reasoning.in_reasoning

    @property
    def reasoning_closed(self) -> bool:
        return self._reasoning is not None and self._reasoning.reasoning_closed

    @property
    def reasoning_started(self) -> bool:
        return self._reasoning is not None and self._reasoning.reasoning_started

    def feed(self, text: str) -> list[OutputEvent]:
        if self._reasoning is None:
            return self._content([Delta("content", text)], finish=False)
        return self._content(list(self._reasoning.feed(text)), finish=False)

    def finish(self) -> list[OutputEvent]:
        tail: list[OutputEvent] = list(self._reasoning.finish()) if self._reasoning is not None else []
        return self._content(tail, finish=True)

    def _content(self, events: list[OutputEvent], *, finish: bool) -> list[OutputEvent]:
        if self._tools is None:
            return merge_deltas(events)
        out: list[OutputEvent] = []
        for event in events:
            if isinstance(event, Delta) and event.kind == "content":
                out.extend(self._tools.feed(event.text))
            else:
                out.append(event)
        if finish:
            out.extend(self._tools.finish())
        return merge_deltas(out)


def parse_output(
    text: str,
    *,
    reasoning: bool = True,
    start_in_reasoning: bool = False,
    tools: Collection[str] | None = None,
    id_factory: Callable[[], str] | None = None,
) -> list[OutputEvent]:
    """Whole-text form of `OutputParser`: all events of one complete output."""
    parser = OutputParser(
        reasoning=reasoning, start_in_reasoning=start_in_reasoning, tools=tools, id_factory=id_factory
    )
    return merge_deltas(parser.feed(text) + parser.finish())
