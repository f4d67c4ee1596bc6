"""Wire types of POST /v1/completions."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hermesd.server.protocol.common import SamplingFields

# llama.cpp's common_grammar_trigger_type for a literal word (the only trigger hermesd takes)
TRIGGER_WORD = 1


class GrammarTrigger(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: int
    value: str = Field(..., min_length=1, max_length=256)


class CompletionRequest(SamplingFields):
    prompt: str | list[str] = Field(...)
    # llama-server's fields for constrained output: a GBNF grammar, applied from the start or (lazy)
    # from the first trigger word on. A hermesd in front of this one (--upstream) sends them.
    grammar: str | None = Field(None, min_length=1)
    grammar_lazy: bool = False
    grammar_triggers: list[GrammarTrigger] = Field(default_factory=list, max_length=1)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def grammar_trigger(self) -> str | None:
        """The word a lazy grammar starts at (ValueError for a trigger hermesd cannot apply)."""
        if not self.grammar_lazy:
            return None
        if not self.grammar_triggers or self.grammar_triggers[0].type != TRIGGER_WORD:
            raise ValueError("grammar_lazy needs one grammar_triggers entry of type 1 (a word)")
        return self.grammar_triggers[0].value
