from __future__ import annotations

from typing import Any

import pytest

from hermesd.models.chat import ChatOptions, Message, ToolCall
from hermesd.models.formats.errors import PromptError
from hermesd.models.formats.hermes import Style, render_chatml, render_hermes
from tests.unit.formats_cases_render import RENDER_CASES, WEATHER_TOOL, RenderCase, T


@pytest.mark.parametrize("case", RENDER_CASES, ids=lambda c: f"{c.style}: {c.id}")
def test_renders_exactly(case: RenderCase) -> None:
    rendered = render_hermes(case.messages, case.options, case.style, bos_token=case.bos_token)
    assert rendered.text == case.expected
    assert rendered.opened_think is False


def test_14b_prompt_matches_the_hf_tokenizer_assertion() -> None:
    # A public project asserts this exact string from the Hermes-4-14B HF tokenizer (thinking=False).
    user = "How do you feel today?"
    rendered = render_hermes([Message("user", user)], ChatOptions(thinking=False), "chatml")
    assert rendered.text == (
        "<|im_start|>system\nYou are Hermes, created by Nous Research.<|im_end|>\n"
        f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_thinking_prompt_in_callers_system_is_not_repeated() -> None:
    rendered = render_hermes(
        [Message("system", f"{T}\nBe brief."), Message("user", "Hi")], ChatOptions(thinking=True), "chatml"
    )
    assert rendered.text.count(T) == 1


# Values of the wrong type, as a client could send them.
ROBOT: Any = "robot"
NOT_A_TOOL: Any = "f"


def _tool(name: Any = "f", **function: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, **function}}


@pytest.mark.parametrize(
    ("messages", "options", "param"),
    [
        ([], ChatOptions(), "messages"),
        ([Message("user", "Hi"), Message("assistant", "Hello")], ChatOptions(), "messages[1].role"),
        ([Message(ROBOT, "Hi")], ChatOptions(), "messages[0].role"),
        (
            [Message("user", "Hi")],
            ChatOptions(tools=(_tool(), {"type": "function", "function": {}})),
            "tools[1].function.name",
        ),
        ([Message("user", "Hi")], ChatOptions(tools=(_tool(name="bad name"),)), "tools[0].function.name"),
        ([Message("user", "Hi")], ChatOptions(tools=(_tool(), _tool())), "tools[1].function.name"),
        ([Message("user", "Hi")], ChatOptions(tools=({"type": "retrieval"},)), "tools[0].type"),
        (
            [Message("user", "Hi")],
            ChatOptions(tools=({"type": "function", "function": "f"},)),
            "tools[0].function",
        ),
        ([Message("user", "Hi")], ChatOptions(tools=(NOT_A_TOOL,)), "tools[0]"),
        ([Message("user", "Hi")], ChatOptions(tools=(_tool(parameters=[]),)), "tools[0].function.parameters"),
        (
            [Message("user", "Hi")],
            ChatOptions(tools=(_tool(description=3),)),
            "tools[0].function.description",
        ),
        (
            [
                Message("user", "Hi"),
                Message("assistant", "", tool_calls=(ToolCall("f", "{oops"),)),
                Message("tool", "x"),
            ],
            ChatOptions(),
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            [
                Message("user", "Hi"),
                Message("assistant", "", tool_calls=(ToolCall("", "{}"),)),
                Message("tool", "x"),
            ],
            ChatOptions(),
            "messages[1].tool_calls[0].function.name",
        ),
        ([Message("user", "Hi", tool_calls=(ToolCall("f", "{}"),))], ChatOptions(), "messages[0].tool_calls"),
    ],
)
@pytest.mark.parametrize("style", ["chatml", "llama3", "seed"])
def test_errors_name_the_field(
    messages: list[Message], options: ChatOptions, param: str, style: Style
) -> None:
    with pytest.raises(PromptError) as info:
        render_hermes(messages, options, style)
    assert info.value.param == param
    assert isinstance(info.value, ValueError) and str(info.value)


def test_empty_arguments_mean_no_arguments() -> None:
    messages = [
        Message("user", "t?"),
        Message("assistant", "", tool_calls=(ToolCall("f", ""),)),
        Message("tool", "1"),
    ]
    text = render_hermes(messages, ChatOptions(), "chatml").text
    assert '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>' in text


@pytest.mark.parametrize(
    ("messages", "options", "expected"),
    [
        ([Message("user", "Hi")], ChatOptions(), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        (
            [Message("system", "Be brief."), Message("user", "Hi")],
            ChatOptions(thinking=True),
            "<|im_start|>system\nBe brief.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        ),
        (
            [Message("user", "Hi")],
            ChatOptions(tools=(WEATHER_TOOL,), add_generation_prompt=False),
            "<|im_start|>system\n# Tools\n\n",
        ),
    ],
)
def test_plain_chatml(messages: list[Message], options: ChatOptions, expected: str) -> None:
    text = render_chatml(messages, options).text
    assert text.startswith(expected)
    if not options.tools:
        assert text == expected
