"""Wire types of the Anthropic Messages API: POST /v1/messages and /v1/messages/count_tokens
(request side; responses are built as dicts by server/serving_anthropic.py).

Fields Claude Code and the `anthropic` SDK send that change nothing here (`metadata`,
`cache_control`, `citations`, beta fields) are ignored; content the model cannot read (images,
documents) is refused by validation, naming the block.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hermesd.server.protocol.text import RequestBody


class _Block(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextBlock(_Block):
    type: Literal["text"]
    text: str


class ThinkingBlock(_Block):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None  # ours, sent back by the client; accepted and not checked


class RedactedThinkingBlock(_Block):
    type: Literal["redacted_thinking"]
    data: str = ""


class ToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: str = Field(..., max_length=256)
    name: str = Field(..., min_length=1, max_length=256)
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: str = Field(..., max_length=256)
    content: str | list[TextBlock] = ""
    is_error: bool = False


ContentBlock = Annotated[
    TextBlock | ThinkingBlock | RedactedThinkingBlock | ToolUseBlock | ToolResultBlock,
    Field(discriminator="type"),
]


class MessageParam(_Block):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class Tool(_Block):
    # "custom" (or none): a function the client runs. Anthropic's server tools (web_search_..., bash_...)
    # carry their own type and no schema; they are left out (server/serving_anthropic.py).
    type: str | None = Field(None, max_length=256)
    name: str = Field(..., min_length=1, max_length=256)
    description: str | None = None
    input_schema: dict[str, Any] | None = None

    @property
    def is_custom(self) -> bool:
        return self.type in (None, "custom")


class ToolChoiceAuto(_Block):
    type: Literal["auto"]
    disable_parallel_tool_use: bool = False


class ToolChoiceAny(_Block):
    type: Literal["any"]
    disable_parallel_tool_use: bool = False


class ToolChoiceTool(_Block):
    type: Literal["tool"]
    name: str = Field(..., min_length=1, max_length=256)
    disable_parallel_tool_use: bool = False


class ToolChoiceNone(_Block):
    type: Literal["none"]


ToolChoice = Annotated[
    ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")
]


class ThinkingEnabled(_Block):
    type: Literal["enabled"]
    budget_tokens: int = Field(..., ge=1)


class ThinkingDisabled(_Block):
    type: Literal["disabled"]


class ThinkingAdaptive(_Block):
    """The model decides how much to think (`between_tools` too): reasoning on, the budget from
    `output_config.effort` or the server's default."""

    type: Literal["adaptive", "between_tools"]


Thinking = Annotated[ThinkingEnabled | ThinkingDisabled | ThinkingAdaptive, Field(discriminator="type")]


class OutputConfig(_Block):
    effort: str | None = None  # an effort level, read by server/reasoning_controls.py


class CountTokensRequest(RequestBody):
    """The body of /v1/messages/count_tokens: a message request without the generation fields."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(..., min_length=1, max_length=256)
    messages: list[MessageParam] = Field(..., min_length=1)
    system: str | list[TextBlock] | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(..., ge=1)  # required, as Anthropic requires it
    stop_sequences: list[Annotated[str, Field(min_length=1)]] | None = None
    stream: bool = False
    # range-checked where chat completions checks them (SamplingFields), after the conversion
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
