"""What a chat is, independent of any wire format.

The server converts OpenAI request bodies into these; the prompt renderers, the training data
loader and the tune command consume them. Nothing here knows about HTTP or llama.cpp.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class ToolCall:
    """One function call made by the assistant. `arguments` is the JSON text, as OpenAI sends it."""

    name: str
    arguments: str
    id: str = ""


@dataclass(frozen=True)
class Message:
    role: Role
    content: str = ""
    # An assistant turn's reasoning, when it came separately (OpenAI-style `reasoning_content`).
    reasoning_content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class ChatOptions:
    """Per-request switches that change how a chat is rendered into a prompt."""

    thinking: bool = False
    keep_cots: bool = False
    # Function definitions in OpenAI's shape: {"type": "function", "function": {...}}.
    tools: tuple[dict[str, Any], ...] = ()
    add_generation_prompt: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
