from __future__ import annotations

from typing import Any

import pytest

from hermesd.models.chat import ChatOptions, Message, ToolCall
from hermesd.models.formats import template as template_module
from hermesd.models.formats.errors import PromptError
from hermesd.models.formats.template import render_gguf_template

# A ChatML template in the style of Qwen 3's, written for these tests.
CHATML = """{%- if tools %}<|im_start|>system
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}<|im_end|>
{% endif %}
{%- for message in messages %}
<|im_start|>{{ message.role }}
{% if message.reasoning_content is defined %}<think>{{ message.reasoning_content }}</think>{% endif %}
{{- message.content }}
{%- for call in message.tool_calls or [] %}<tool_call>{{ call.function | tojson }}</tool_call>{% endfor %}
<|im_end|>
{% endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% if enable_thinking %}<think>
{% endif %}{% endif %}"""

HI = [Message("user", "Hi")]


def render(template: str, messages: list[Message] = HI, **options: Any) -> str:
    opts = ChatOptions(**options)
    return render_gguf_template(template, messages, opts, bos_token="<s>", eos_token="</s>").text


def test_chatml_template_renders() -> None:
    messages = [Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello", "r")]
    assert render(CHATML, [*messages, Message("user", "Bye")]) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n<think>r</think>Hello<|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_thinking_flags_reach_the_template() -> None:
    flags = "{{ thinking }}|{{ enable_thinking }}|{{ keep_cots }}|{{ add_generation_prompt }}|"
    flags += "{{ bos_token }}{{ eos_token }}"
    assert render(flags, thinking=True, keep_cots=True) == "True|True|True|True|<s></s>"
    assert render(flags, add_generation_prompt=False) == "False|False|False|False|<s></s>"


def test_open_think_at_the_end_is_detected() -> None:
    result = render_gguf_template(CHATML, HI, ChatOptions(thinking=True), bos_token="", eos_token="")
    assert result.text.endswith("<|im_start|>assistant\n<think>\n") and result.opened_think
    result = render_gguf_template(CHATML, HI, ChatOptions(thinking=False), bos_token="", eos_token="")
    assert not result.opened_think
    closed = "<think>\n\n</think>\n\n"
    assert not render_gguf_template(closed, HI, ChatOptions(), bos_token="", eos_token="").opened_think


def test_tools_and_tool_calls_arrive_in_openai_shape() -> None:
    tool = {"type": "function", "function": {"name": "f", "description": "a<b"}}
    calls = (ToolCall("f", '{"x": "é"}', "call_1"),)
    messages = [
        Message("user", "Hi"),
        Message("assistant", "", tool_calls=calls),
        Message("tool", "1", tool_call_id="call_1"),
    ]
    text = render(CHATML, messages, tools=(tool,))
    # tojson as transformers does it: no HTML escaping, no ASCII escaping; arguments as an object.
    assert '{"type": "function", "function": {"name": "f", "description": "a<b"}}' in text
    assert '<tool_call>{"name": "f", "arguments": {"x": "é"}}</tool_call>' in text
    assert render("{{ messages[2].tool_call_id }}|{{ tools is none }}", messages) == "call_1|True"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{% generation %}x{% endgeneration %}y", "xy"),
        ("{% for i in range(5) %}{% if i == 2 %}{% break %}{% endif %}{{ i }}{% endfor %}", "01"),
        ("{{ strftime_now('%Y') | length }}", "4"),
        ("{% if x is defined %}x{% endif %}{{ messages[0]['content'] }}", "Hi"),
        ("  {% if true %}\n  a\n  {% endif %}\n", "  a\n"),  # trim_blocks and lstrip_blocks
    ],
)
def test_hugging_face_helpers(template: str, expected: str) -> None:
    assert render(template) == expected


def test_raise_exception_becomes_a_prompt_error() -> None:
    with pytest.raises(PromptError, match="roles must alternate") as info:
        render("{{ raise_exception('Conversation roles must alternate') }}")
    assert info.value.param == "messages"


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ joiner.__init__.__globals__['os'] }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ raise_exception.__globals__ }}",
        "{{ messages.append({'role': 'user'}) }}",
        "{{ messages[0].update({'role': 'x'}) }}",
        "{{ ().__class__.__base__.__subclasses__() }}",
        "{{ self._TemplateReference__context }}",
        "{{ 'a' * 100000000 }}",
        "{{ [1] * 100000000 }}",
        "{{ 2 ** 100000 }}",
        "{% for i in range(100000000) %}{% endfor %}",
        "{{ '{0.__class__}'.format('') }}",
    ],
)
def test_sandbox_escapes_raise_prompt_error(template: str) -> None:
    with pytest.raises(PromptError):
        render(template)


@pytest.mark.parametrize(
    "template",
    ["{% for %}", "{{ messages[0].content ", "{% if x %}", "{% endfor %}", "{{ 1 + }}", "{% unknowntag %}"],
)
def test_syntax_errors_raise_prompt_error(template: str) -> None:
    with pytest.raises(PromptError, match="chat template"):
        render(template)


@pytest.mark.parametrize(
    "template",
    [
        "{{ undefined_thing + 'x' }}",
        "{{ messages[5]['content'] + 'x' }}",
        "{{ 1 / 0 }}",
        "{{ messages[0].content.split('</think>', 1)[1] + 'x' }}",
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    ],
)
def test_runtime_errors_raise_prompt_error(template: str) -> None:
    with pytest.raises(PromptError):
        render(template)


def test_output_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(template_module, "MAX_OUTPUT_CHARS", 1000)
    with pytest.raises(PromptError, match="more than 1000"):
        render("{% for i in range(2000) %}x{% endfor %}")


def test_each_template_is_compiled_once() -> None:
    template_module._compile.cache_clear()
    for _ in range(3):
        render("{{ messages | length }}-unique")
    info = template_module._compile.cache_info()
    assert (info.misses, info.hits) == (1, 2)
