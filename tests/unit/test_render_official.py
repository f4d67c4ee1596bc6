"""Our renderer against the only verbatim Hermes 4 template text found (see tests/unit/data/README.md).

Sources, all secondary: hermes4_14b_system.jinja is the opening of the Hermes-4-14B GGUF template as
dumped by llama-server's /props; hermes4_70b_cot_strip.jinja and hermes4_70b_system_open.jinja are
Hermes-4-70B chat_template.jinja lines quoted in a public diagnosis of LM Studio's "+ on undefined
values" error.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hermesd.models.chat import ChatOptions, Message
from hermesd.models.formats.hermes import LLAMA3_BOS, THINKING_PROMPT, Style, render_hermes, strip_prior_cot
from hermesd.models.formats.prompt import message_dicts
from hermesd.models.formats.template import render_gguf_template

DATA = Path(__file__).parent / "data"
SYSTEM_14B = (DATA / "hermes4_14b_system.jinja").read_text()
COT_STRIP_70B = (DATA / "hermes4_70b_cot_strip.jinja").read_text()
SYSTEM_OPEN_70B = (DATA / "hermes4_70b_system_open.jinja").read_text()

_ENV = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

CHATS = {
    "no system": [Message("user", "Hi")],
    "caller system": [Message("system", "Be brief."), Message("user", "Hi")],
    "multi-turn": [Message("user", "a"), Message("assistant", "b"), Message("user", "c")],
}


@pytest.mark.parametrize("chat", sorted(CHATS))
@pytest.mark.parametrize("thinking", [False, True])
def test_14b_system_turn_is_byte_identical(chat: str, thinking: bool) -> None:
    messages = CHATS[chat]
    official = _ENV.from_string(SYSTEM_14B).render(messages=message_dicts(messages), thinking=thinking)
    ours = render_hermes(messages, ChatOptions(thinking=thinking), "chatml").text
    if thinking and chat == "caller system":
        # Our documented extension: the official template drops the reasoning prompt here.
        assert official == "<|im_start|>system\nBe brief.<|im_end|>\n"
        assert ours.startswith(f"<|im_start|>system\n{THINKING_PROMPT}\n\nBe brief.<|im_end|>\n")
        return
    assert ours.startswith(official)
    assert ours[len(official) :].startswith("<|im_start|>user\n")  # the whole system turn, not a prefix of it


def test_14b_fragment_through_our_sandbox_gives_the_same_bytes() -> None:
    messages = CHATS["no system"]
    for thinking in (False, True):
        via_sandbox = render_gguf_template(
            SYSTEM_14B, messages, ChatOptions(thinking=thinking), bos_token="", eos_token="<|im_end|>"
        ).text
        assert via_sandbox == _ENV.from_string(SYSTEM_14B).render(
            messages=message_dicts(messages), thinking=thinking
        )


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.mark.parametrize("chat", sorted(CHATS))
@pytest.mark.parametrize("thinking", [False, True])
@pytest.mark.parametrize("tools", [(), (WEATHER,)], ids=["plain", "tools"])
def test_70b_system_turn_opens_as_the_official_branches_do(
    chat: str, thinking: bool, tools: tuple[dict[str, object], ...]
) -> None:
    messages = CHATS[chat]
    options = ChatOptions(thinking=thinking, tools=tools)
    official = render_gguf_template(
        SYSTEM_OPEN_70B, messages, options, bos_token=LLAMA3_BOS, eos_token="<|eot_id|>"
    ).text
    assert official.count("\n") == (1 if tools else 2)
    ours = render_hermes(messages, options, "llama3").text
    assert ours.startswith(official)
    assert ours[len(official)] != "\n"  # the system text follows at once: no extra newline


def _strip_official(content: str, *, thinking: bool, keep_cots: bool) -> str:
    source = "{%- set content = given %}" + COT_STRIP_70B + "{{- content }}"
    return _ENV.from_string(source).render(given=content, thinking=thinking, keep_cots=keep_cots)


@pytest.mark.parametrize(
    "content",
    [
        "<think>\nadd\n</think>\n4",
        "<think>a</think>b</think>c",
        "x</think>",
        "</think>",
        "<think> </think>\nold",
    ],
)
def test_70b_cot_strip_is_byte_identical(content: str) -> None:
    assert strip_prior_cot(content) == _strip_official(content, thinking=True, keep_cots=False)
    assert _strip_official(content, thinking=True, keep_cots=True) == content
    assert _strip_official(content, thinking=False, keep_cots=False) == content
    chat = [Message("user", "q"), Message("assistant", content), Message("user", "q2")]
    styles: tuple[Style, ...] = ("llama3", "seed", "chatml")
    for style in styles:
        text = render_hermes(chat, ChatOptions(thinking=True), style).text
        assert strip_prior_cot(content) + ("<|im_end|>" if style == "chatml" else "<|eot_id|>") in text


def test_70b_cot_strip_breaks_without_close_tag_and_ours_does_not() -> None:
    # The crash LM Studio users hit; our renderer applies the guard they added instead.
    with pytest.raises(jinja2.UndefinedError):
        _strip_official("Hello!", thinking=True, keep_cots=False)
    assert strip_prior_cot("Hello!") == "Hello!"
