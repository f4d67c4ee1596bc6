"""Wire types of Ollama's API (/api/chat, /api/generate, /api/show), request side.

Only the fields hermesd acts on are typed; the rest of what Ollama clients send (`keep_alive`,
load-time `options` such as `num_gpu` or `num_thread`) is accepted and ignored, as Ollama ignores
options a runner does not know. Sampling ranges are checked once, by the chat request these
convert into (server/protocol/common.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hermesd.server.protocol.text import RequestBody


class OllamaOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    num_predict: int | None = None  # -1: until the turn ends, -2: until the context is full
    stop: list[str] | None = None
    num_ctx: int | None = Field(None, ge=1)
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class OllamaFunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(..., min_length=1, max_length=256)
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class OllamaToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str | None = Field(None, max_length=256)
    function: OllamaFunctionCall


class OllamaMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[OllamaToolCall] | None = None
    tool_name: str | None = Field(None, max_length=256)
    tool_call_id: str | None = Field(None, max_length=256)


class OllamaGenerationFields(RequestBody):
    """What /api/chat and /api/generate share."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(..., min_length=1, max_length=256)
    stream: bool = True  # Ollama streams unless told not to
    think: bool | Literal["low", "medium", "high"] | None = None
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: OllamaOptions | None = None
    keep_alive: float | str | None = None
    logprobs: bool | None = None


class OllamaChatRequest(OllamaGenerationFields):
    messages: list[OllamaMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class OllamaGenerateRequest(OllamaGenerationFields):
    prompt: str | None = None
    system: str | None = None
    suffix: str | None = None
    template: str | None = None
    raw: bool | None = None
    images: list[str] | None = None
    context: list[int] | None = None


class OllamaShowRequest(RequestBody):
    model_config = ConfigDict(extra="ignore")
    # older clients send `name`
    model: str | None = Field(None, min_length=1, max_length=256)
    name: str | None = Field(None, min_length=1, max_length=256)
    verbose: bool | None = None

    def model_name(self) -> str | None:
        return self.model or self.name
