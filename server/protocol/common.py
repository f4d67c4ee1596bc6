"""Request fields shared by /v1/chat/completions and /v1/completions, range-checked."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hermesd.server.protocol.text import RequestBody

# Fields OpenAI defines that would change the result but that hermesd does not implement:
# refusing them beats silently returning something else than the client asked for.
UNSUPPORTED_IF_SET: dict[str, str] = {
    "logprobs": "logprobs are not supported",
    "top_logprobs": "logprobs are not supported",
    "logit_bias": "logit_bias is not supported",
    "best_of": "best_of is not supported",
    "echo": "echo is not supported",
    "suffix": "suffix is not supported",
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
    "functions": "the legacy `functions` field is not supported; use `tools`",
    "function_call": "the legacy `function_call` field is not supported; use `tool_choice`",
}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class SamplingFields(RequestBody):
    """Fields every generation request may carry. Unknown extra fields are kept, then checked."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model: str = Field(..., min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=5.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, le=100_000)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    repeat_penalty: float | None = Field(None, gt=0.0, le=5.0)
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)
    n: int = Field(1, ge=1)
    # llama-server's extension: generate exactly max_tokens, past end-of-turn (benchmarks)
    ignore_eos: bool = False

    @field_validator(
        "temperature",
        "top_p",
        "min_p",
        "presence_penalty",
        "frequency_penalty",
        "repeat_penalty",
        mode="before",
    )
    @classmethod
    def _finite(cls, value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        if isinstance(value, bool):
            raise ValueError("must be a number")
        return value

    @field_validator("stop", mode="before")
    @classmethod
    def _stop(cls, value: Any) -> Any:
        if isinstance(value, list) and any(not isinstance(v, str) or not v for v in value):
            raise ValueError("stop sequences must be non-empty strings")
        if isinstance(value, str) and not value:
            return None
        return value

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def extra_fields(self) -> dict[str, Any]:
        return dict(self.model_extra or {})
