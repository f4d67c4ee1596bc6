"""llama.cpp grammars (GBNF) that constrain generation: forced tool calls and JSON output.

Built from JSON schemas with llama-cpp-python's schema converter. The converter silently ignores
keywords it cannot express, which would let output that breaks the schema through; so schemas are
walked first and any such keyword is refused with the JSON pointer where it stands.

With reasoning on, the constraint must apply to the answer only: `after_reasoning()` wraps a grammar
so that it starts at `</think>`, and the engine runs it lazily, triggered by that tag.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from llama_cpp.llama_grammar import json_schema_to_gbnf

from hermesd.models.formats.errors import PromptError

THINK_CLOSE = "</think>"

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
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


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


def schema_grammar(schema: Mapping[str, Any] | bool, param: str) -> str:
    check_schema(schema, param)
    try:
        grammar = str(json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # the converter raises many kinds of errors for bad schemas
        raise PromptError(f"{param}: cannot build a grammar from this schema: {exc}", param) from exc
    # JSON forbids raw control characters inside strings; this converter's `char` rule allows them
    return grammar.replace(_LOOSE_CHAR, _STRICT_CHAR)


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


def tool_call_grammar(
    tools: Sequence[Mapping[str, Any]], *, only: str | None = None, parallel: bool = True
) -> str:
    """A grammar whose every sentence is one (or, with `parallel`, several) Hermes tool calls:
    `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, with arguments that follow
    the function's parameter schema."""
    variants = []
    for i, tool in enumerate(tools):
        fn = tool["function"]
        if only is not None and fn["name"] != only:
            continue
        params = fn.get("parameters") or {"type": "object"}
        variants.append(
            (
                i,
                {
                    "type": "object",
                    "properties": {"name": {"const": fn["name"]}, "arguments": params},
                    "required": ["name", "arguments"],
                },
            )
        )
    if not variants:
        raise PromptError(f"tool_choice names the function {only!r}, which is not in tools", "tool_choice")
    parts = []
    alts = []
    for i, schema in variants:
        g = _rename_root(schema_grammar(schema, f"tools[{i}].function.parameters"), f"t{i}")
        parts.append(g)
        alts.append(f"t{i}-root")
    body = "\n".join(parts)
    call = 'call ::= "<tool_call>\\n" (' + " | ".join(alts) + ') "\\n</tool_call>"'
    root = 'root ::= call ("\\n" call)*' if parallel else "root ::= call"
    return f"{root}\n{call}\n{body}\n"


def json_object_grammar() -> str:
    return schema_grammar({"type": "object"}, "response_format")


def after_reasoning(grammar: str) -> str:
    """Make `grammar` start at the reasoning's close tag (the engine triggers it lazily there)."""
    renamed = _rename_root(grammar, "a")
    return f'root ::= "{THINK_CLOSE}" [ \\n]* a-root\n{renamed}'
