"""Wire types of POST /v1/chat/completions (request side; responses are built as dicts)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hermesd.server.protocol.common import SamplingFields


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(..., min_length=1, max_length=256)
    arguments: str | dict[str, Any] = "{}"


class ToolCallIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field("", max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = Field(None, max_length=256)
    name: str | None = Field(None, max_length=256)


class ChatTemplateKwargs(BaseModel):
    # Only known keys: template options from requests are an attack surface (see security.md).
    model_config = ConfigDict(extra="forbid")
    thinking: bool | None = None
    enable_thinking: bool | None = None
    keep_cots: bool | None = None


class ReasoningOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    enabled: bool | None = None
    effort: str | None = None
    max_tokens: int | None = Field(None, ge=0)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessageIn] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    # reasoning controls, in the spellings clients already send
    think: bool | Literal["low", "medium", "high"] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    chat_template_kwargs: ChatTemplateKwargs | None = None
    reasoning: ReasoningOptions | None = None
    max_reasoning_tokens: int | None = Field(None, ge=0)
    thinking_token_budget: int | None = Field(None, ge=0)
    reasoning_format: Literal["separate", "parsed", "deepseek", "auto", "inline", "none"] | None = None
    # tools (issue: tool calling) are parsed here so bad definitions fail validation early
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("messages")
    @classmethod
    def _not_empty(cls, value: list[ChatMessageIn]) -> list[ChatMessageIn]:
        if not value:
            raise ValueError("at least one message is required")
        return value
