"""Tables and the one harness for the output parsers (reasoning, tool calls, both chained).

Every case runs on the whole text, split in two at every character position, and one character at a
time; all runs must produce the same reasoning, content and calls.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from hermesd.models.formats.deltas import Delta, OutputEvent, ToolCallEvent

WEATHER = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
TIME = '{"name": "get_time", "arguments": {}}'
TOOLS = ("get_weather", "get_time")


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    reasoning: str | None  # None: no reasoning was opened
    content: str
    calls: tuple[tuple[str, str], ...] = ()  # (name, arguments JSON)
    start_in_reasoning: bool = False
    tools: tuple[str, ...] | None = None  # None: tool parsing off


@dataclass(frozen=True)
class Outcome:
    reasoning: str
    content: str
    calls: tuple[tuple[int, str, str, str], ...]  # (index, id, name, arguments)


class StreamParser(Protocol):
    def feed(self, text: str) -> Sequence[OutputEvent]: ...
    def finish(self) -> Sequence[OutputEvent]: ...


def counter_ids() -> Callable[[], str]:
    counter = itertools.count()
    return lambda: f"call_{next(counter)}"


def chunkings(text: str) -> Iterator[list[str]]:
    """The whole text; every split into two pieces; one character at a time."""
    yield [text]
    for i in range(1, len(text)):
        yield [text[:i], text[i:]]
    if len(text) > 1:
        yield list(text)


def run(parser: StreamParser, chunks: Sequence[str]) -> Outcome:
    events: list[OutputEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.finish())
    for event in events:
        if isinstance(event, Delta):
            assert event.text, f"empty delta emitted for chunks {chunks!r}"
    return Outcome(
        reasoning="".join(e.text for e in events if isinstance(e, Delta) and e.kind == "reasoning"),
        content="".join(e.text for e in events if isinstance(e, Delta) and e.kind == "content"),
        calls=tuple((e.index, e.id, e.name, e.arguments) for e in events if isinstance(e, ToolCallEvent)),
    )


def expected(case: Case) -> Outcome:
    calls = tuple((i, f"call_{i}", name, args) for i, (name, args) in enumerate(case.calls))
    return Outcome(reasoning=case.reasoning or "", content=case.content, calls=calls)


REASONING_CASES = [
    Case("no tags", "Hello, world.", None, "Hello, world."),
    Case("no tags, whitespace kept", "  Hi there\n", None, "  Hi there\n"),
    Case("empty output", "", None, ""),
    Case("whitespace only", " \n ", None, " \n "),
    Case(
        "think then answer",
        "<think>\nLet me see.\n</think>\nThe answer is 4.",
        "Let me see.",
        "The answer is 4.",
    ),
    Case("think after leading whitespace", "\n <think>a</think>b", "a", "b"),
    Case("think with no close", "<think>\nStill thinking about it\n", "Still thinking about it", ""),
    Case("only an open tag", "<think>", "", ""),
    Case("empty think", "<think></think>answer", "", "answer"),
    Case("blank think", "<think>\n\n</think>\n\nanswer", "", "answer"),
    Case(
        "start in reasoning, only close",
        "Okay so 2+2.\n</think>\n\n4",
        "Okay so 2+2.",
        "4",
        start_in_reasoning=True,
    ),
    Case(
        "start in reasoning, never closed",
        "\nthinking forever ",
        "thinking forever",
        "",
        start_in_reasoning=True,
    ),
    Case(
        "start in reasoning, repeated open",
        "<think>\nhmm\n</think>\nok",
        "hmm",
        "ok",
        start_in_reasoning=True,
    ),
    Case("start in reasoning, nothing", "  \n", "", "", start_in_reasoning=True),
    Case("start in reasoning, close first", "</think>answer", "", "answer", start_in_reasoning=True),
    Case(
        "close tag inside code in the answer",
        "<think>plan</think>\n```python\nprint('</think>')\n```\n",
        "plan",
        "```python\nprint('</think>')\n```\n",
    ),
    Case(
        "tags later in the answer stay",
        "<think>a</think>Use <think> tags like <think>x</think>.",
        "a",
        "Use <think> tags like <think>x</think>.",
    ),
    Case("think not at start is content", "Answer <think>no</think>", None, "Answer <think>no</think>"),
    Case("close without open is content", "</think>hello", None, "</think>hello"),
    Case("double close", "<think>a</think></think>b", "a", "</think>b"),
    Case(
        "whitespace variants",
        "  \n<think>  \n\n reason \n </think>  \n\n answer  \n",
        "reason",
        "answer  \n",
    ),
    Case("inner whitespace kept", "<think>a \n\n b</think>c d", "a \n\n b", "c d"),
    Case("lookalike <thin", "<thin>not a tag", None, "<thin>not a tag"),
    Case("lookalike <think without >", "<think", None, "<think"),
    Case("lookalike </th in reasoning", "<think>a </th b</think>c", "a </th b", "c"),
    Case("lookalike </think at the end", "<think>a </think", "a </think", ""),
    Case("< at end of content", "2 < 3 <", None, "2 < 3 <"),
    Case("< at end of reasoning", "<think>x <", "x <", ""),
    Case("< right after open tag", "<think><</think>>", "<", ">"),
    Case("unicode", "<think>ü → ∑</think>ok 😀", "ü → ∑", "ok 😀"),
]

TOOL_CASES = [
    Case(
        "one call", f"<tool_call>\n{WEATHER}\n</tool_call>", None, "", (("get_weather", '{"city": "Paris"}'),)
    ),
    Case("call without newlines", f"<tool_call>{TIME}</tool_call>", None, "", (("get_time", "{}"),)),
    Case(
        "several calls",
        f"<tool_call>\n{WEATHER}\n</tool_call>\n<tool_call>\n{TIME}\n</tool_call>\n",
        None,
        "",
        (("get_weather", '{"city": "Paris"}'), ("get_time", "{}")),
    ),
    Case(
        "text around calls",
        f"Let me check.\n<tool_call>\n{WEATHER}\n</tool_call>\nOne moment.\n\n"
        f"<tool_call>{TIME}</tool_call> Done.",
        None,
        "Let me check.\nOne moment. Done.",
        (("get_weather", '{"city": "Paris"}'), ("get_time", "{}")),
    ),
    Case(
        "invalid JSON stays content",
        "Sure.\n<tool_call>\n{not json}\n</tool_call>",
        None,
        "Sure.\n<tool_call>\n{not json}\n</tool_call>",
    ),
    Case(
        "unknown tool stays content",
        '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',
        None,
        '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',
    ),
    Case(
        "no name stays content",
        '<tool_call>{"arguments": {}}</tool_call>',
        None,
        '<tool_call>{"arguments": {}}</tool_call>',
    ),
    Case(
        "bad block then good block",
        f"<tool_call>oops</tool_call>\n<tool_call>{TIME}</tool_call>",
        None,
        "<tool_call>oops</tool_call>",
        (("get_time", "{}"),),
    ),
    Case(
        "unterminated call stays content",
        'Checking <tool_call>\n{"name": "get_weather"',
        None,
        'Checking <tool_call>\n{"name": "get_weather"',
    ),
    Case(
        "arguments missing or quoted",
        '<tool_call>{"name": "get_time"}</tool_call><tool_call>{"name": "get_weather", '
        '"arguments": "{\\"city\\": \\"Oslo\\"}"}</tool_call>',
        None,
        "",
        (("get_time", "{}"), ("get_weather", '{"city": "Oslo"}')),
    ),
    Case(
        "non-ASCII arguments, compact JSON",
        '<tool_call>{"name":"get_weather","arguments":{"city":"Zürich","days":[1,2]}}</tool_call>',
        None,
        "",
        (("get_weather", '{"city": "Zürich", "days": [1, 2]}'),),
    ),
    Case(
        "lookalike tags", "a <tool x <tool_cal> </tool_call> <", None, "a <tool x <tool_cal> </tool_call> <"
    ),
    Case("trailing whitespace without calls kept", "Hello\n\n", None, "Hello\n\n"),
]
for _i, _c in enumerate(TOOL_CASES):
    TOOL_CASES[_i] = Case(_c.id, _c.text, _c.reasoning, _c.content, _c.calls, _c.start_in_reasoning, TOOLS)

OUTPUT_CASES = [
    Case(
        "call after reasoning",
        f"<think>\nI should call the tool.\n</think>\n<tool_call>\n{WEATHER}\n</tool_call>",
        "I should call the tool.",
        "",
        (("get_weather", '{"city": "Paris"}'),),
        tools=TOOLS,
    ),
    Case(
        "tool tag inside reasoning stays reasoning",
        f"<think>maybe <tool_call>{TIME}</tool_call>?</think>No.",
        f"maybe <tool_call>{TIME}</tool_call>?",
        "No.",
        tools=TOOLS,
    ),
    Case(
        "tools off: tags stay content",
        f"<tool_call>{TIME}</tool_call>",
        None,
        f"<tool_call>{TIME}</tool_call>",
    ),
    Case(
        "start in reasoning, then a call",
        f"hmm\n</think>\n\nCalling.\n<tool_call>{TIME}</tool_call>\n",
        "hmm",
        "Calling.",
        (("get_time", "{}"),),
        start_in_reasoning=True,
        tools=TOOLS,
    ),
]
