"""What a chat request asks of tools and output shape: tool_choice, parallel calls, response_format.

Turns the OpenAI fields into: the tools to render, the tool names to parse out of the output, and
the grammar (if any) that forces a call or a JSON answer. When the output may begin with reasoning
(the request's `Reasoning` says so), the grammar is made lazy: it starts at the close tag, so the
reasoning itself stays free text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from hermesd.models.formats.errors import PromptError
from hermesd.models.formats.grammars import after_reasoning
from hermesd.models.formats.prompt import validate_tools
from hermesd.models.formats.reasoning import Reasoning
from hermesd.runtime.engine.grammars import json_object_grammar, schema_grammar, tool_call_grammar
from hermesd.server.errors import invalid
from hermesd.server.protocol.chat import ChatCompletionRequest


@dataclass(frozen=True)
class Constraints:
    tools: tuple[dict[str, Any], ...] = ()  # rendered into the prompt
    parse_tools: tuple[str, ...] | None = None  # names to parse calls for; None: no tool parsing
    single_call: bool = False
    grammar: str | None = None
    grammar_trigger: str | None = None

    def after_reasoning(self, reasoning: Reasoning) -> Constraints:
        """These constraints for an output that may begin with reasoning: the grammar starts at
        `reasoning.constraint_trigger` (the close tag), or at once when there is none."""
        trigger = reasoning.constraint_trigger
        if self.grammar is None or trigger is None:
            return self
        return replace(self, grammar=after_reasoning(self.grammar, trigger), grammar_trigger=trigger)


def _tool_choice(value: str | dict[str, Any] | None, has_tools: bool) -> tuple[str, str | None]:
    if value is None:
        return ("auto" if has_tools else "none"), None
    if isinstance(value, str):
        if value not in ("none", "auto", "required"):
            raise invalid("tool_choice must be 'none', 'auto', 'required' or a function", param="tool_choice")
        if value != "none" and not has_tools:
            raise invalid(f"tool_choice '{value}' needs tools", param="tool_choice")
        return value, None
    fn = value.get("function") if isinstance(value, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if value.get("type") != "function" or not isinstance(name, str):
        raise invalid(
            'tool_choice must look like {"type": "function", "function": {"name": ...}}', param="tool_choice"
        )
    if not has_tools:
        raise invalid("tool_choice names a function but no tools were given", param="tool_choice")
    return "named", name


def _response_format_grammar(fmt: dict[str, Any] | None) -> str | None:
    if fmt is None:
        return None
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return json_object_grammar()
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise invalid(
                "response_format.json_schema.schema must be a JSON schema object",
                param="response_format.json_schema.schema",
            )
        return schema_grammar(schema, "response_format.json_schema.schema")
    raise invalid(
        "response_format.type must be 'text', 'json_object' or 'json_schema'", param="response_format.type"
    )


def resolve_constraints(req: ChatCompletionRequest, *, max_tools: int) -> Constraints:
    """The request's constraints, the grammar applying from the start (see `after_reasoning`)."""
    try:
        tools = validate_tools(req.tools) if req.tools else ()
    except PromptError as exc:
        raise invalid(str(exc), param=exc.param) from None
    if len(tools) > max_tools:
        raise invalid(f"tools: at most {max_tools} tools per request", param="tools")
    mode, name = _tool_choice(req.tool_choice, bool(tools))
    names = tuple(t["function"]["name"] for t in tools)
    if name is not None and name not in names:
        raise invalid(f"tool_choice names {name!r}, which is not among the tools", param="tool_choice")
    parallel = req.parallel_tool_calls is not False
    try:
        grammar = None
        if mode in ("required", "named"):
            grammar = tool_call_grammar(tools, only=name, parallel=parallel)
        json_grammar = _response_format_grammar(req.response_format)
    except PromptError as exc:
        raise invalid(str(exc), param=exc.param) from None
    if json_grammar is not None:
        if grammar is not None:
            raise invalid(
                "response_format cannot be combined with a forced tool_choice", param="response_format"
            )
        grammar = json_grammar
    return Constraints(
        tools=tools if mode != "none" else (),
        parse_tools=names if mode != "none" and tools else None,
        single_call=not parallel,
        grammar=grammar,
    )
