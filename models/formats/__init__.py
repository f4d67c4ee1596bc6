"""Prompt formats and output parsing: chats in, prompt text out; model text in, deltas and tool calls out.

Errors: every function here that takes a request's chat or tools raises `PromptError` (a ValueError
with `.param` naming the request field) for input it cannot render.
"""

from hermesd.models.formats.deltas import Delta, OutputEvent, ToolCallEvent
from hermesd.models.formats.detect import FORMAT_NAMES, detect_chat_format, render_chat
from hermesd.models.formats.errors import PromptError
from hermesd.models.formats.hermes import STANDARD_PROMPT, THINKING_PROMPT, render_chatml, render_hermes
from hermesd.models.formats.output import OutputParser, parse_output
from hermesd.models.formats.prompt import RenderedPrompt
from hermesd.models.formats.reasoning import (
    THINK_TAGS,
    Reasoning,
    ReasoningParser,
    ThinkTags,
    split_reasoning,
)
from hermesd.models.formats.template import render_gguf_template
from hermesd.models.formats.toolcalls import ToolCallParser, parse_tool_calls

__all__ = [
    "FORMAT_NAMES",
    "STANDARD_PROMPT",
    "THINKING_PROMPT",
    "THINK_TAGS",
    "Delta",
    "OutputEvent",
    "OutputParser",
    "PromptError",
    "Reasoning",
    "ReasoningParser",
    "RenderedPrompt",
    "ThinkTags",
    "ToolCallEvent",
    "ToolCallParser",
    "detect_chat_format",
    "parse_output",
    "parse_tool_calls",
    "render_chat",
    "render_chatml",
    "render_gguf_template",
    "render_hermes",
    "split_reasoning",
]
