"""Grammar text for forced tool calls and JSON output (pure): schemas with keywords the grammar
cannot enforce are refused with the keyword and its place, and per-tool grammars combine into one
without renaming what sits inside string literals. tests/engine/test_grammar_constrains.py checks
that llama.cpp parses the grammars and that they really constrain generation."""

from __future__ import annotations

from typing import Any

import pytest

from hermesd.models.formats.errors import PromptError
from hermesd.models.formats.grammars import (
    after_reasoning,
    check_schema,
    join_tool_calls,
    tool_call_schemas,
)
from tests.fixtures.behaviours import WEATHER_TOOL

# a grammar whose literals and character classes spell its own rule names
ECHO = 'root ::= "root" ws "\\"ws\\"" [root]\nws ::= [ ws]*\n'


def test_joined_calls_rename_rules_but_not_literals() -> None:
    g = join_tool_calls([ECHO, ECHO], parallel=False)
    assert g.splitlines()[:2] == [
        "root ::= call",
        'call ::= "<tool_call>\\n" (t0-root | t1-root) "\\n</tool_call>"',
    ]
    for prefix in ("t0", "t1"):
        assert f'{prefix}-root ::= "root" {prefix}-ws "\\"ws\\"" [root]' in g
        assert f"{prefix}-ws ::= [ ws]*" in g
    assert join_tool_calls([ECHO]).startswith('root ::= call ("\\n" call)*\n')


def test_after_reasoning_starts_at_the_close_tag() -> None:
    g = after_reasoning(ECHO)
    assert g.splitlines()[0] == 'root ::= "</think>" [ \\n]* a-root'
    assert 'a-root ::= "root" a-ws "\\"ws\\"" [root]' in g


def test_each_tool_call_is_an_object_with_the_name_and_the_arguments() -> None:
    other = {"type": "function", "function": {"name": "now"}}
    schemas = tool_call_schemas([WEATHER_TOOL, other])
    assert [param for param, _ in schemas] == ["tools[0].function.parameters", "tools[1].function.parameters"]
    assert schemas[0][1]["properties"] == {
        "name": {"const": "get_weather"},
        "arguments": WEATHER_TOOL["function"]["parameters"],
    }
    assert schemas[1][1]["properties"]["arguments"] == {"type": "object"}  # no parameters: any object
    assert tool_call_schemas([WEATHER_TOOL, other], only="now") == [schemas[1]]


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
        check_schema(schema, "response_format.json_schema.schema")
    assert err.value.param == "response_format.json_schema.schema"


def test_supported_schemas_pass() -> None:
    check_schema({"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}, "s")
    check_schema({"$defs": {"x": {"type": "string"}}, "$ref": "#/$defs/x"}, "s")


def test_remote_refs_are_refused() -> None:
    with pytest.raises(PromptError, match="only local"):
        check_schema({"$ref": "https://example.com/s.json"}, "s")


def test_huge_schemas_are_refused() -> None:
    with pytest.raises(PromptError, match="larger than"):
        check_schema({"enum": ["x" * 1000] * 100}, "s")


def test_named_tool_must_exist() -> None:
    with pytest.raises(PromptError, match="not in tools") as err:
        tool_call_schemas([WEATHER_TOOL], only="nope")
    assert err.value.param == "tool_choice"
