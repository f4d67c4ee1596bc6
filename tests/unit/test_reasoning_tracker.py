"""The request's one `Reasoning`: the engine's token count and budget, the server's split and the lazy
grammar all follow it, so they agree on where reasoning ends. (The grammar's wiring through the server
is tested in tests/serving/test_chat_serving.py.)"""

from __future__ import annotations

import pytest

from hermesd.models.formats.output import OutputParser
from hermesd.models.formats.reasoning import THINK_TAGS, Reasoning
from hermesd.runtime.engine.text_stream import ReasoningTracker
from tests.unit.formats_cases import REASONING_CASES, Case

# (tokens the model writes, starts_open, reasoning tokens counted: the opening and closing tokens too)
COUNTS = [
    (["<think>", "\n", "a", " b", "\n", "</think>", "\n", "Answer"], False, 6),
    (["<th", "ink>", "x", "</th", "ink>", "y"], False, 4),
    (["  ", "<think>", "x", "</think>"], False, 3),
    (["Hello", " <think>", "x", "</think>"], False, 0),
    (["a", "b", "</think>", "c"], True, 3),
    (["<think>", "a", "</think>"], True, 3),
    (["<think>", "never closed", "..."], False, 3),
]


@pytest.mark.parametrize(("tokens", "starts_open", "expected"), COUNTS)
def test_tokens_inside_reasoning_are_counted(tokens: list[str], starts_open: bool, expected: int) -> None:
    tracker = ReasoningTracker(Reasoning(starts_open=starts_open))
    for token in tokens:
        tracker.push(token)
    assert tracker.tokens == expected


@pytest.mark.parametrize("case", REASONING_CASES, ids=lambda c: c.id)
def test_engine_and_server_agree_where_reasoning_ends(case: Case) -> None:
    # Fed one character per token, the engine is inside reasoning exactly while the server's parser is.
    reasoning = Reasoning(starts_open=case.start_in_reasoning)
    tracker, parser = ReasoningTracker(reasoning), OutputParser.for_request(reasoning)
    for ch in case.text:
        tracker.push(ch)
        parser.feed(ch)
        assert tracker.in_reasoning == parser.in_reasoning, case.text


def test_budget_closes_the_reasoning_with_the_formats_close_line() -> None:
    tracker = ReasoningTracker(Reasoning(thinking=True, budget=2))
    tracker.push("<think>")
    assert not tracker.over_budget
    tracker.push("a")
    assert tracker.over_budget
    assert tracker.close() == THINK_TAGS.close_line == "\n</think>\n"
    assert not tracker.in_reasoning and not tracker.over_budget
    tracker.push("answer")
    assert tracker.tokens == 2


def test_zero_budget_on_a_prompt_that_opened_reasoning_is_spent_at_once() -> None:
    assert ReasoningTracker(Reasoning(budget=0, starts_open=True)).over_budget
    assert not ReasoningTracker(Reasoning(budget=0)).over_budget


@pytest.mark.parametrize(
    ("reasoning", "trigger"),
    [
        (Reasoning(), None),
        (Reasoning(thinking=True), "</think>"),
        # a template that opens the reasoning itself: the answer comes after the close tag even with
        # thinking off, so a grammar must wait for it
        (Reasoning(starts_open=True), "</think>"),
    ],
)
def test_constraints_start_after_the_reasoning_when_there_may_be_some(
    reasoning: Reasoning, trigger: str | None
) -> None:
    assert reasoning.constraint_trigger == trigger
