"""The one converter from OpenAI chat messages to `Message`s (server requests and tune data alike)."""

from __future__ import annotations

from typing import Any

import pytest

from hermesd.models.chat import ChatOptions, Message, ToolCall
from hermesd.models.formats.errors import PromptError
from hermesd.models.formats.hermes import render_hermes
from hermesd.models.formats.messages import messages_from_openai

Q = {"role": "user", "content": "Q"}


def assistant(**fields: Any) -> dict[str, Any]:
    return {"role": "assistant", **fields}


# (case, OpenAI message, the Message it becomes) -- the same with strict on and off
BOTH = [
    ("developer is system", {"role": "developer", "content": "S"}, Message("system", "S")),
    (
        "text parts joined",
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        Message("user", "ab"),
    ),
    ("tool content may be null", {"role": "tool", "content": None}, Message("tool", "")),
    (
        "tool call arguments as an object, as text, or missing",
        assistant(
            content=None,
            tool_calls=[
                {"id": "c1", "function": {"name": "f", "arguments": {"x": 1}}},
                {"function": {"name": "g", "arguments": '{"y": 2}'}},
                {"function": {"name": "h"}},
            ],
        ),
        Message(
            "assistant",
            "",
            tool_calls=(ToolCall("f", '{"x": 1}', "c1"), ToolCall("g", '{"y": 2}'), ToolCall("h", "{}")),
        ),
    ),
    ("reasoning_content", assistant(content="A", reasoning_content="R"), Message("assistant", "A", "R")),
    ("reasoning (OpenRouter's name)", assistant(content="A", reasoning="R"), Message("assistant", "A", "R")),
    (
        "inline reasoning is split off",
        assistant(content="<think>\nR\n</think>\nA"),
        Message("assistant", "A", "R"),
    ),
    ("inline, no whitespace", assistant(content="<think>R</think>A"), Message("assistant", "A", "R")),
    (
        "separate reasoning stripped, the answer loses its lead",
        assistant(content="\n\nA", reasoning_content="  R\n"),
        Message("assistant", "A", "R"),
    ),
    (
        "an empty think block is no reasoning",
        assistant(content="<think></think>A"),
        Message("assistant", "A"),
    ),
    ("no reasoning: content as it is", assistant(content="  A \n"), Message("assistant", "  A \n")),
    (
        "only assistants carry reasoning",
        {"role": "user", "content": "Q", "reasoning": "R"},
        Message("user", "Q"),
    ),
    (
        "tool message ids",
        {"role": "tool", "content": "18C", "tool_call_id": "c1", "name": "f"},
        Message("tool", "18C", tool_call_id="c1", name="f"),
    ),
]


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(("case", "item", "expected"), BOTH, ids=[c[0] for c in BOTH])
def test_converts(case: str, item: dict[str, Any], expected: Message, strict: bool) -> None:
    assert messages_from_openai([item], strict=strict) == [expected]


# (case, assistant message, what a request gets, the training-data error)
AMBIGUOUS = [
    ("never closed", assistant(content="<think>R"), Message("assistant", "", "R"), "never closed"),
    (
        "twice",
        assistant(content="<think>a</think>b<think>c</think>d"),
        Message("assistant", "b<think>c</think>d", "a"),
        "must come first",
    ),
    (
        "after the answer",
        assistant(content="A <think>x</think>"),
        Message("assistant", "A <think>x</think>"),
        "must come first",
    ),
    (
        "inline and separate",
        assistant(content="<think>a</think>b", reasoning_content="c"),
        Message("assistant", "<think>a</think>b", "c"),
        "reasoning given twice",
    ),
]


@pytest.mark.parametrize(("case", "item", "lenient", "error"), AMBIGUOUS, ids=[c[0] for c in AMBIGUOUS])
def test_ambiguous_reasoning_is_kept_in_requests_and_refused_in_training_data(
    case: str, item: dict[str, Any], lenient: Message, error: str
) -> None:
    assert messages_from_openai([item]) == [lenient]
    with pytest.raises(PromptError, match=error) as info:
        messages_from_openai([item], strict=True)
    assert info.value.param == "messages[0].content"


@pytest.mark.parametrize(
    ("items", "param"),
    [
        ([], "messages"),
        ({"role": "user"}, "messages"),
        (["hi"], "messages[0]"),
        ([{"role": "wizard", "content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": None}], "messages[0].content"),
        ([{"role": "system"}], "messages[0].content"),
        ([{"role": "user", "content": 42}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "messages[0].content[0]"),
        ([Q, {"role": "user", "content": "x", "tool_calls": [{}]}], "messages[1].tool_calls"),
        ([assistant(content="", tool_calls={})], "messages[0].tool_calls"),
        (
            [assistant(content="", tool_calls=[{"function": {"name": ""}}])],
            "messages[0].tool_calls[0].function.name",
        ),
        (
            [assistant(content="", tool_calls=[{"function": {"name": "f", "arguments": 3}}])],
            "messages[0].tool_calls[0].function.arguments",
        ),
        ([assistant(content="A", reasoning_content=7)], "messages[0].reasoning_content"),
    ],
)
def test_bad_messages_name_the_field(items: Any, param: str) -> None:
    for strict in (False, True):
        with pytest.raises(PromptError) as info:
            messages_from_openai(items, strict=strict)
        assert info.value.param == param


def test_a_turn_renders_the_same_however_its_reasoning_was_sent_back() -> None:
    spellings = [
        assistant(content="4", reasoning_content="add"),
        assistant(content="4", reasoning="add"),
        assistant(content="<think>\nadd\n</think>\n4"),
        assistant(content="<think>add</think>\n\n4"),
    ]
    for options in (ChatOptions(), ChatOptions(thinking=True), ChatOptions(thinking=True, keep_cots=True)):
        prompts = {
            render_hermes(messages_from_openai([Q, turn, Q]), options, "chatml").text for turn in spellings
        }
        assert len(prompts) == 1, prompts
