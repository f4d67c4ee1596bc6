"""Wire types of POST /v1/responses (request side; responses and stream events are built as dicts).

Input items are told apart by `type` (a message may leave it out, as OpenAI allows). What an item
means for the conversation is decided in `server/serving_responses.py`, which turns the request into
the chat request every generation endpoint shares.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from hermesd.server.protocol.text import RequestBody

# Fields OpenAI defines whose effect hermesd does not implement: refused rather than ignored.
UNSUPPORTED_IF_SET: dict[str, str] = {
    "background": "background responses are not supported",
    "conversation": "conversations are not supported; use previous_response_id",
    "prompt": "prompt templates are not supported",
    "top_logprobs": "logprobs are not supported",
}


class ContentPart(BaseModel):
    """A part of a message's content; only text parts are read (checked when converting)."""

    model_config = ConfigDict(extra="ignore")
    type: str
    text: str | None = None


class MessageItem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[ContentPart]


class FunctionCallItem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["function_call"]
    call_id: str = Field(..., min_length=1, max_length=256)
    name: str = Field(..., min_length=1, max_length=256)
    arguments: str = "{}"


class FunctionCallOutputItem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["function_call_output"]
    call_id: str = Field(..., min_length=1, max_length=256)
    output: str | list[ContentPart]


class ReasoningItem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["reasoning"]
    content: list[ContentPart] | None = None
    summary: list[ContentPart] = Field(default_factory=list)


class OtherItem(BaseModel):
    """An item type hermesd does not read (refused when converting, naming its type)."""

    model_config = ConfigDict(extra="allow")
    type: str


def _item_kind(value: Any) -> str:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", "message")
    return kind if kind in ("message", "function_call", "function_call_output", "reasoning") else "other"


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[OtherItem, Tag("other")],
    Discriminator(_item_kind),
]


class ReasoningParam(BaseModel):
    model_config = ConfigDict(extra="ignore")
    effort: str | None = None
    summary: str | None = None


class TextParam(BaseModel):
    model_config = ConfigDict(extra="ignore")
    format: dict[str, Any] | None = None


class ResponsesRequest(RequestBody):
    model_config = ConfigDict(extra="allow")

    model: str = Field(..., min_length=1, max_length=256)
    input: str | list[InputItem] = Field(default_factory=list)
    instructions: str | None = None
    previous_response_id: str | None = Field(None, max_length=256)
    store: bool = True
    stream: bool = False
    reasoning: ReasoningParam | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextParam | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    metadata: dict[str, str] | None = None
    user: str | None = Field(None, max_length=256)

    def extra_fields(self) -> dict[str, Any]:
        return dict(self.model_extra or {})
