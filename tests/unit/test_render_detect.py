from __future__ import annotations

from typing import Any

import pytest

from hermesd.models.chat import ChatOptions, Message
from hermesd.models.formats.detect import FORMAT_NAMES, detect_chat_format, render_chat

TEMPLATE = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (
            {
                "general.name": "Hermes 4 14B",
                "general.architecture": "qwen3",
                "tokenizer.chat_template": TEMPLATE,
            },
            "hermes-chatml",
        ),
        ({"general.basename": "NousResearch_Hermes-4-14B", "general.architecture": "qwen3"}, "hermes-chatml"),
        ({"general.name": "Hermes-4-70B", "general.architecture": "llama"}, "hermes-llama3"),
        ({"general.name": "Hermes 4 405B", "general.architecture": "llama"}, "hermes-llama3"),
        ({"general.name": "Hermes-4.3-36B", "general.architecture": "seed_oss"}, "hermes-seed"),
        ({"general.name": b"Hermes-4.3-36B", "general.architecture": b"seed_oss"}, "hermes-seed"),
        (
            {"general.name": "Models", "general.basename": "Hermes-4", "general.architecture": "llama"},
            "hermes-llama3",
        ),
        (
            {
                "general.name": "Hermes 3 Llama 3.1 8B",
                "general.architecture": "llama",
                "tokenizer.chat_template": TEMPLATE,
            },
            "gguf-template",
        ),
        ({"general.name": "Hermes-2-Pro-Llama-3-8B", "general.architecture": "llama"}, "chatml"),
        ({"general.name": "OpenHermes 2.5 Mistral", "general.architecture": "llama"}, "chatml"),
        (
            {
                "general.name": "DeepHermes 3",
                "general.architecture": "llama",
                "tokenizer.chat_template": TEMPLATE,
            },
            "gguf-template",
        ),
        ({"general.name": "Hermes 40B", "general.architecture": "llama"}, "chatml"),
        (
            {
                "general.name": "Qwen3 0.6B",
                "general.architecture": "qwen3",
                "tokenizer.chat_template": TEMPLATE,
            },
            "gguf-template",
        ),
        (
            {
                "general.name": "Hermes 4 14B",
                "general.architecture": "mistral",
                "tokenizer.chat_template": TEMPLATE,
            },
            "gguf-template",
        ),
        ({"general.name": "tiny", "tokenizer.chat_template": "   "}, "chatml"),
        ({}, "chatml"),
    ],
)
def test_detect(metadata: dict[str, Any], expected: str) -> None:
    assert detect_chat_format(metadata) == expected
    assert expected in FORMAT_NAMES


@pytest.mark.parametrize(
    ("format_name", "start"),
    [
        ("hermes-chatml", "<|im_start|>system\nYou are Hermes"),
        ("hermes-llama3", "<B><|start_header_id|>system<|end_header_id|>\n\nYou are Hermes"),
        ("hermes-seed", "<B><|start_header_id|>system<|end_header_id|>\n\nYou are Hermes"),
        ("gguf-template", "[user]Hi"),
        ("chatml", "<|im_start|>user\nHi<|im_end|>\n"),
    ],
)
def test_render_chat_dispatches(format_name: str, start: str) -> None:
    rendered = render_chat(
        format_name,
        [Message("user", "Hi")],
        ChatOptions(),
        bos_token="<B>",
        eos_token="<E>",
        template=TEMPLATE,
    )
    assert rendered.text.startswith(start)


def test_hermes_formats_fall_back_to_their_own_bos() -> None:
    text = render_chat(
        "hermes-llama3", [Message("user", "Hi")], ChatOptions(), bos_token="", eos_token=""
    ).text
    assert text.startswith("<|begin_of_text|>")


@pytest.mark.parametrize(("format_name", "template"), [("gguf-template", None), ("nope", TEMPLATE)])
def test_render_chat_rejects_bad_setup(format_name: str, template: str | None) -> None:
    with pytest.raises(ValueError):
        render_chat(
            format_name, [Message("user", "Hi")], ChatOptions(), bos_token="", eos_token="", template=template
        )
