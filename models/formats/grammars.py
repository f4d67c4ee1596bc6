"""GBNF grammar text that constrains generation: forced tool calls and JSON output (pure text).

JSON schemas become GBNF in the engine (runtime/engine/grammars.py, with llama.cpp's converter); this
module holds what needs no converter: the check that refuses schema keywords the converter cannot
enforce (it silently ignores them, which would let output that breaks the schema through), the
assembly of per-tool grammars into one tool-call grammar, and `after_reasoning()`, which wraps a
grammar so that, with reasoning on, it starts at `</think>` (the engine runs it lazily, triggered by
that tag) and the constraint applies to the answer only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from hermesd.models.formats.errors import PromptError
from hermesd.models.formats.reasoning import THINK_TAGS

# Keywords the converter does not enforce (it would accept values that break them).
UNSUPPORTED_KEYWORDS = frozenset(
    {
        "not",
        "if",
        "then",
        "else",
        "dependentSchemas",
        "dependentRequired",
        "dependencies",
        "patternProperties",
        "propertyNames",
        "unevaluatedProperties",
        "unevaluatedItems",
        "contains",
        "minContains",
        "maxContains",
        "uniqueItems",
        "multipleOf",
        "$dynamicRef",
        "$recursiveRef",
        # llama-cpp-python's converter does not bound numbers or object sizes either
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minProperties",
        "maxProperties",
    }
)
_SCHEMA_CHILDREN = (
    "items",
    "additionalProperties",
    "prefixItems",
    "anyOf",
    "oneOf",
    "allOf",
    "properties",
    "$defs",
    "definitions",
)
_MAX_SCHEMA_BYTES = 64 * 1024


def check_schema(schema: Any, param: str) -> None:
    """Refuse schemas with keywords the grammar cannot enforce, naming the keyword and place."""
    if len(json.dumps(schema)) > _MAX_SCHEMA_BYTES:
        raise PromptError(f"{param}: schema larger than {_MAX_SCHEMA_BYTES} bytes", param)

    def walk(node: Any, pointer: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key in UNSUPPORTED_KEYWORDS:
                    raise PromptError(
                        f"{param}: the JSON-schema keyword '{key}' (at '{pointer or '/'}') is not supported "
                        "for constrained output",
                        param,
                    )
                if key == "$ref" and isinstance(value, str) and not value.startswith("#"):
                    raise PromptError(
                        f"{param}: only local '$ref' (#/...) is supported, got {value!r}", param
                    )
                if key in ("properties", "$defs", "definitions") and isinstance(value, Mapping):
                    for name, child in value.items():
                        walk(child, f"{pointer}/{key}/{name}")
                elif key in _SCHEMA_CHILDREN:
                    walk(value, f"{pointer}/{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{pointer}/{i}")

    walk(schema, "")


_LITERAL = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]')


def _rename_root(grammar: str, prefix: str) -> str:
    """Prefix every rule name of a grammar so several grammars can share one file. Names inside
    string literals and character classes are left alone."""
    names = set(re.findall(r"^([A-Za-z0-9-]+) ::=", grammar, flags=re.M))
    word = re.compile(r"(?<![A-Za-z0-9-])([A-Za-z0-9-]+)(?![A-Za-z0-9-])")

    def rename(code: str) -> str:
        return word.sub(lambda m: f"{prefix}-{m[1]}" if m[1] in names else m[1], code)

    out, pos = [], 0
    for m in _LITERAL.finditer(grammar):
        out.append(rename(grammar[pos : m.start()]))
        out.append(m[0])
        pos = m.end()
    out.append(rename(grammar[pos:]))
    return "".join(out)


def tool_call_schemas(
    tools: Sequence[Mapping[str, Any]], only: str | None = None
) -> list[tuple[str, Mapping[str, Any]]]:
    """(request field, schema) of each tool a forced call may use: the call's JSON object
    `{"name": ..., "arguments": {...}}` with arguments that follow the function's parameter schema."""
    schemas: list[tuple[str, Mapping[str, Any]]] = []
    for i, tool in enumerate(tools):
        fn = tool["function"]
        if only is not None and fn["name"] != only:
            continue
        params = fn.get("parameters") or {"type": "object"}
        schema = {
            "type": "object",
            "properties": {"name": {"const": fn["name"]}, "arguments": params},
            "required": ["name", "arguments"],
        }
        schemas.append((f"tools[{i}].function.parameters", schema))
    if not schemas:
        raise PromptError(f"tool_choice names the function {only!r}, which is not in tools", "tool_choice")
    return schemas


def join_tool_calls(call_grammars: Sequence[str], *, parallel: bool = True) -> str:
    """A grammar whose every sentence is one (or, with `parallel`, several) Hermes tool calls:
    `<tool_call>\\n{...}\\n</tool_call>`, the JSON inside following one of `call_grammars`."""
    parts = [_rename_root(g, f"t{i}") for i, g in enumerate(call_grammars)]
    alts = " | ".join(f"t{i}-root" for i in range(len(parts)))
    body = "\n".join(parts)
    call = 'call ::= "<tool_call>\\n" (' + alts + ') "\\n</tool_call>"'
    root = 'root ::= call ("\\n" call)*' if parallel else "root ::= call"
    return f"{root}\n{call}\n{body}\n"


def after_reasoning(grammar: str, close: str = THINK_TAGS.close) -> str:
    """Make `grammar` start at the reasoning's close tag (the engine triggers it lazily there)."""
    renamed = _rename_root(grammar, "a")
    return f'root ::= "{close}" [ \\n]* a-root\n{renamed}'
