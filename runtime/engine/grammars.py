"""JSON schemas turned into llama.cpp grammars (GBNF) with llama-cpp-python's converter.

The converter lives in the llama_cpp package, so this is engine-side; the pure grammar text (the
schema check, tool-call assembly, `after_reasoning`) is in hermesd.models.formats.grammars.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from llama_cpp.llama_grammar import json_schema_to_gbnf

from hermesd.models.formats.errors import PromptError
from hermesd.models.formats.grammars import check_schema, join_tool_calls, tool_call_schemas

_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def schema_grammar(schema: Mapping[str, Any] | bool, param: str) -> str:
    """The grammar of the JSON values `schema` accepts; PromptError (naming `param`) for a schema
    the grammar could not enforce."""
    check_schema(schema, param)
    try:
        grammar = str(json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # the converter raises many kinds of errors for bad schemas
        raise PromptError(f"{param}: cannot build a grammar from this schema: {exc}", param) from exc
    # JSON forbids raw control characters inside strings; this converter's `char` rule allows them
    return grammar.replace(_LOOSE_CHAR, _STRICT_CHAR)


def tool_call_grammar(
    tools: Sequence[Mapping[str, Any]], *, only: str | None = None, parallel: bool = True
) -> str:
    """A grammar whose every sentence is one (or, with `parallel`, several) Hermes tool calls of
    `tools` (only the function named `only`, when given)."""
    calls = [schema_grammar(schema, param) for param, schema in tool_call_schemas(tools, only)]
    return join_tool_calls(calls, parallel=parallel)


def json_object_grammar() -> str:
    return schema_grammar({"type": "object"}, "response_format")
