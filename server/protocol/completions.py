"""Wire types of POST /v1/completions."""

from __future__ import annotations

from pydantic import Field, field_validator

from hermesd.server.protocol.common import SamplingFields


class CompletionRequest(SamplingFields):
    prompt: str | list[str] = Field(...)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]
