"""Grammars for forced tool calls and JSON output: llama.cpp's own parser accepts every one, and
schemas with keywords the grammar cannot enforce are refused with the keyword and its place."""

from __future__ import annotations

from typing import Any

import pytest
from llama_cpp.llama_grammar import LlamaGrammar

from hermesd.models.formats.errors import PromptError
from hermesd.models.formats.grammars import (
    after_reasoning,
    json_object_grammar,
    schema_grammar,
    tool_call_grammar,
)
from tests.fixtures.behaviours import WEATHER_TOOL

OTHER_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        },
    },
}


@pytest.mark.parametrize(
    "grammar",
    [
        tool_call_grammar([WEATHER_TOOL]),
        tool_call_grammar([WEATHER_TOOL, OTHER_TOOL], parallel=False),
        tool_call_grammar([WEATHER_TOOL, OTHER_TOOL], only="add"),
        json_object_grammar(),
        after_reasoning(tool_call_grammar([WEATHER_TOOL])),
        after_reasoning(json_object_grammar()),
        schema_grammar({"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}, "s"),
    ],
    ids=["one-tool", "two-tools-single", "named", "json-object", "lazy-tool", "lazy-json", "enum-array"],
)
def test_llama_cpp_parses_the_grammar(grammar: str) -> None:
    assert LlamaGrammar.from_string(grammar, verbose=False) is not None


def test_tool_grammar_keeps_string_literals_intact() -> None:
    g = tool_call_grammar([WEATHER_TOOL])
    assert '"<tool_call>\\n"' in g and '"\\"arguments\\""' in g and '"\\"get_weather\\""' in g


def test_strings_may_not_hold_control_characters() -> None:
    assert "\\x00-\\x1F" in schema_grammar({"type": "string"}, "s")


@pytest.mark.parametrize(
    ("schema", "keyword"),
    [
        ({"not": {"type": "string"}}, "not"),
        ({"type": "object", "properties": {"n": {"type": "integer", "maximum": 3}}}, "maximum"),
        ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "uniqueItems"),
        ({"anyOf": [{"type": "string"}, {"if": {"type": "string"}}]}, "if"),
        ({"$defs": {"x": {"multipleOf": 2}}, "$ref": "#/$defs/x"}, "multipleOf"),
    ],
)
def test_unsupported_keywords_are_named(schema: dict[str, Any], keyword: str) -> None:
    with pytest.raises(PromptError, match=f"'{keyword}'") as err:
        schema_grammar(schema, "response_format.json_schema.schema")
    assert err.value.param == "response_format.json_schema.schema"


def test_remote_refs_are_refused() -> None:
    with pytest.raises(PromptError, match="only local"):
        schema_grammar({"$ref": "https://example.com/s.json"}, "s")


def test_named_tool_must_exist() -> None:
    with pytest.raises(PromptError, match="not in tools"):
        tool_call_grammar([WEATHER_TOOL], only="nope")
