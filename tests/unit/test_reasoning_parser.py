from __future__ import annotations

import pytest

from hermesd.models.formats.reasoning import ReasoningParser, split_reasoning
from tests.unit.formats_cases import REASONING_CASES, Case, chunkings, expected, run


@pytest.mark.parametrize("case", REASONING_CASES, ids=lambda c: c.id)
def test_whole_text(case: Case) -> None:
    assert split_reasoning(case.text, start_in_reasoning=case.start_in_reasoning) == (
        case.reasoning,
        case.content,
    )


@pytest.mark.parametrize("case", REASONING_CASES, ids=lambda c: c.id)
def test_streamed_in_every_split(case: Case) -> None:
    want = expected(case)
    for chunks in chunkings(case.text):
        parser = ReasoningParser(start_in_reasoning=case.start_in_reasoning)
        assert run(parser, chunks) == want, chunks
        assert parser.reasoning_started == (case.reasoning is not None), chunks


@pytest.mark.parametrize(
    ("pieces", "in_reasoning", "closed"),
    [
        ([], False, False),
        (["  "], False, False),
        (["<thi"], False, False),
        (["<think>"], True, False),
        (["<think>abc"], True, False),
        (["<think>abc</thi"], True, False),
        (["<think>abc</think>"], False, True),
        (["<think>abc</think>answer"], False, True),
        (["answer"], False, False),
    ],
)
def test_state_for_the_budget(pieces: list[str], in_reasoning: bool, closed: bool) -> None:
    parser = ReasoningParser()
    for piece in pieces:
        parser.feed(piece)
    assert (parser.in_reasoning, parser.reasoning_closed) == (in_reasoning, closed)


def test_start_in_reasoning_counts_as_reasoning_before_any_output() -> None:
    parser = ReasoningParser(start_in_reasoning=True)
    assert parser.in_reasoning
    parser.feed("x</think>")
    assert not parser.in_reasoning and parser.reasoning_closed


def test_reasoning_streams_before_close() -> None:
    # Text is released as it arrives; only trailing whitespace and half tags wait.
    parser = ReasoningParser()
    assert [d.text for d in parser.feed("<think>\nstep one ")] == ["step one"]
    assert [d.text for d in parser.feed("and two</")] == [" and two"]
