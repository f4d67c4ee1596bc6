from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hermesd.models.formats.output import OutputParser, parse_output
from tests.unit.formats_cases import (
    OUTPUT_CASES,
    REASONING_CASES,
    TOOL_CASES,
    TOOLS,
    Case,
    chunkings,
    counter_ids,
    expected,
    run,
)

ALL_CASES = REASONING_CASES + TOOL_CASES + OUTPUT_CASES


def make(case: Case) -> OutputParser:
    return OutputParser(
        start_in_reasoning=case.start_in_reasoning, tools=case.tools, id_factory=counter_ids()
    )


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_streamed_in_every_split(case: Case) -> None:
    want = expected(case)
    for chunks in chunkings(case.text):
        assert run(make(case), chunks) == want, chunks


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_whole_text_function_agrees(case: Case) -> None:
    events = parse_output(
        case.text, start_in_reasoning=case.start_in_reasoning, tools=case.tools, id_factory=counter_ids()
    )
    assert run(_Replay(events), [case.text]) == expected(case)


class _Replay:
    def __init__(self, events: list) -> None:
        self._events = events

    def feed(self, text: str) -> list:
        return self._events

    def finish(self) -> list:
        return []


def test_inline_mode_leaves_everything_in_content() -> None:
    text = "<think>x</think>y <tool_call>{}</tool_call>"
    parser = OutputParser(reasoning=False)
    assert run(parser, list(text)).content == text
    assert not parser.in_reasoning and not parser.reasoning_closed


def test_events_keep_their_order() -> None:
    text = '<think>r</think>a<tool_call>{"name": "get_time"}</tool_call>b'
    events = parse_output(text, tools=TOOLS, id_factory=counter_ids())
    kinds = [getattr(e, "kind", "call") for e in events]
    assert kinds == ["reasoning", "content", "call", "content"]


def test_in_reasoning_follows_the_stream() -> None:
    parser = OutputParser(tools=TOOLS)
    parser.feed("<think>hm")
    assert parser.in_reasoning
    parser.feed("</think>ok")
    assert not parser.in_reasoning and parser.reasoning_closed


_PIECES = [
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    '{"name": "get_time"}',
    "{bad",
    "<",
    "/",
    ">",
]
_PIECES += ["think", "tool_", " ", "\n", "a", "b."]


@settings(max_examples=300, deadline=None, database=None)
@given(
    pieces=st.lists(st.sampled_from(_PIECES), max_size=14),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
    start_in_reasoning=st.booleans(),
)
def test_any_chunking_gives_the_same_events(
    pieces: list[str], cuts: list[int], start_in_reasoning: bool
) -> None:
    text = "".join(pieces)
    bounds = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    chunks = [text[a:b] for a, b in itertools.pairwise(bounds)]
    whole = parse_output(text, start_in_reasoning=start_in_reasoning, tools=TOOLS, id_factory=counter_ids())
    parser = OutputParser(start_in_reasoning=start_in_reasoning, tools=TOOLS, id_factory=counter_ids())
    outcome = run(_Replay(whole), [text])
    assert run(parser, chunks) == outcome
    assert "</think>" not in outcome.reasoning  # the first one always closes reasoning
