"""Choose how to build prompts for a GGUF model, and render with that choice.

A GGUF named as a Hermes 4 model gets our own renderer for its architecture, because the official
templates have known problems (thinking ignored when the caller sends a system message, a crash on
earlier assistant turns with no ``</think>``, community uploads shipping the wrong format). Any other
GGUF uses the chat template embedded in it, and plain ChatML when it has none.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from hermesd.models.chat import ChatOptions, Message
from hermesd.models.formats.hermes import render_chatml, render_hermes
from hermesd.models.formats.prompt import RenderedPrompt
from hermesd.models.formats.template import render_gguf_template

logger = logging.getLogger(__name__)

FORMAT_NAMES: tuple[str, ...] = ("hermes-chatml", "hermes-llama3", "hermes-seed", "gguf-template", "chatml")

# "Hermes 4 14B", "Hermes-4-70B", "Hermes-4.3-36B", "NousResearch_Hermes-4-14B"; not "Hermes 3",
# "Hermes-2-Pro", "OpenHermes" or "DeepHermes" (the letter check), nor a hypothetical "Hermes 40".
_HERMES4_NAME = re.compile(r"(?<![a-z])hermes[\s_-]*4(?:\.\d+)?(?![\d.]*\d)", re.IGNORECASE)

_HERMES_BY_ARCH = {"qwen3": "hermes-chatml", "llama": "hermes-llama3", "seed_oss": "hermes-seed"}


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else ""


def is_hermes4_name(name: str) -> bool:
    return bool(_HERMES4_NAME.search(name))


def detect_chat_format(metadata: Mapping[str, Any]) -> str:
    """One of FORMAT_NAMES for a GGUF's metadata (keys as in the file: ``general.name`` ...)."""
    names = (_text(metadata.get("general.name")), _text(metadata.get("general.basename")))
    arch = _text(metadata.get("general.architecture"))
    if any(is_hermes4_name(n) for n in names):
        fmt = _HERMES_BY_ARCH.get(arch)
        if fmt is not None:
            return fmt
        logger.warning(
            "model %r is named as Hermes 4 but has architecture %r; using its own template", names, arch
        )
    if _text(metadata.get("tokenizer.chat_template")).strip():
        return "gguf-template"
    return "chatml"


def render_chat(
    format_name: str,
    messages: Sequence[Message],
    options: ChatOptions,
    *,
    bos_token: str,
    eos_token: str,
    template: str | None = None,
) -> RenderedPrompt:
    """Render a chat in the named format. Raises PromptError for chats or tools that cannot be rendered."""
    if format_name == "hermes-chatml":
        return render_hermes(messages, options, "chatml")
    if format_name == "hermes-llama3":
        return render_hermes(messages, options, "llama3", bos_token=bos_token or None)
    if format_name == "hermes-seed":
        return render_hermes(messages, options, "seed", bos_token=bos_token or None)
    if format_name == "gguf-template":
        if not template:
            raise ValueError("chat format 'gguf-template' needs the model's template text")
        return render_gguf_template(template, messages, options, bos_token=bos_token, eos_token=eos_token)
    if format_name == "chatml":
        return render_chatml(messages, options)
    raise ValueError(f"unknown chat format {format_name!r}; expected one of {', '.join(FORMAT_NAMES)}")
