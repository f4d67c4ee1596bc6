"""Grammars for forced tool calls and JSON output, held to llama.cpp itself.

`LlamaGrammar.from_string` parses nothing since llama-cpp-python 0.3.0 (it keeps the text), so
accepting a grammar there proves nothing. Here llama.cpp's grammar parser reads every grammar the
server builds (`llama_sampler_init_grammar` returns NULL for one it cannot parse), and the tiny model
generates under them: whatever it samples must be what the schema allows.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import llama_cpp.llama_cpp as ll
import pytest

from hermesd.models.formats.grammars import after_reasoning, join_tool_calls
from hermesd.runtime.engine.context_settings import ContextSettings
from hermesd.runtime.engine.grammars import json_object_grammar, schema_grammar, tool_call_grammar
from hermesd.runtime.engine.llama_model import LlamaModelConfig
from hermesd.runtime.engine.llamacpp import EngineConfig, LlamaCppEngine
from hermesd.runtime.engine.protocol import FinishEvent, GenerationRequest, SamplingParams, TextEvent
from tests.fixtures.behaviours import WEATHER_TOOL
from tests.fixtures.tiny_models import tiny_model


def tool(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    parameters = {"type": "object", "properties": properties, "required": sorted(properties)}
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


UNIT = tool("set_unit", {"unit": {"enum": ["celsius", "fahrenheit"]}})
LIGHT = tool("switch", {"on": {"type": "boolean"}, "room": {"enum": ["hall", "attic"]}})
ANSWER = {
    "type": "object",
    "properties": {"answer": {"enum": ["yes", "no"]}, "sure": {"type": "boolean"}},
    "required": ["answer", "sure"],
    "additionalProperties": False,
}


def parses(grammar: str) -> bool:
    """Whether llama.cpp's own grammar parser accepts `grammar` (no vocabulary needed to parse)."""
    sampler = ll.llama_sampler_init_grammar(None, grammar.encode(), b"root")
    if not sampler:
        return False
    ll.llama_sampler_free(sampler)
    return True


@pytest.mark.parametrize(
    "grammar",
    [
        tool_call_grammar([WEATHER_TOOL]),
        tool_call_grammar([WEATHER_TOOL, UNIT], parallel=False),
        tool_call_grammar([WEATHER_TOOL, UNIT], only="set_unit"),
        json_object_grammar(),
        after_reasoning(tool_call_grammar([WEATHER_TOOL])),
        after_reasoning(json_object_grammar()),
        schema_grammar({"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}, "s"),
        schema_grammar(ANSWER, "s"),
    ],
    ids=[
        "one-tool",
        "two-tools-single",
        "named",
        "json-object",
        "lazy-tool",
        "lazy-json",
        "enum-array",
        "object",
    ],
)
def test_llama_cpp_parses_the_grammar(grammar: str) -> None:
    assert parses(grammar)


@pytest.mark.parametrize(
    "grammar",
    [
        "root ::= nope",  # undefined rule
        'root ::= "unterminated',
        "garbage",
        join_tool_calls(["root ::= item\n"]),  # a tool grammar that names a rule it does not define
        json_object_grammar().replace("root ::=", "start ::="),  # no root
    ],
)
def test_llama_cpp_refuses_broken_grammars(grammar: str) -> None:
    """The check above can fail: these are what `LlamaGrammar.from_string` would have accepted."""
    assert not parses(grammar)


def test_strings_may_not_hold_control_characters() -> None:
    assert "\\x00-\\x1F" in schema_grammar({"type": "string"}, "s")


# -- generation under a grammar


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    config = EngineConfig(
        LlamaModelConfig(path=tiny_model("qwen3")), ContextSettings(ctx=1024, parallel=2, threads=2)
    )
    engine = LlamaCppEngine(config)
    try:
        yield engine
    finally:
        engine.close()


def generate(engine: LlamaCppEngine, grammar: str | None, seed: int) -> tuple[str, str]:
    """(text, finish reason) of one sampled (not greedy) reply to a prompt the model was never taught."""

    async def run() -> tuple[str, str]:
        sampling = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=seed)
        stream = await engine.submit(GenerationRequest("zq zq", 200, sampling, grammar=grammar))
        events = [e async for e in stream]
        finish = events[-1]
        assert isinstance(finish, FinishEvent), events
        return "".join(e.text for e in events if isinstance(e, TextEvent)), finish.reason

    return asyncio.run(run())


SEEDS = range(4)


def test_without_a_grammar_the_reply_is_not_json(engine: LlamaCppEngine) -> None:
    """The control for the tests below: what they see is the grammar's doing, not the model's habit."""
    for seed in SEEDS:
        text, _ = generate(engine, None, seed)
        with pytest.raises(ValueError):
            json.loads(text)


def test_a_schema_grammar_yields_only_values_the_schema_allows(engine: LlamaCppEngine) -> None:
    replies = set()
    for seed in SEEDS:
        text, reason = generate(engine, schema_grammar(ANSWER, "s"), seed)
        assert reason == "stop", text  # the grammar ends where the value ends
        jsonschema.validate(json.loads(text), ANSWER)
        replies.add(text)
    assert len(replies) > 1  # sampled, so the grammar was tested on more than one path


def test_a_forced_single_call_is_one_valid_call_of_a_given_tool(engine: LlamaCppEngine) -> None:
    call = re.compile(r"<tool_call>\n(.*)\n</tool_call>", re.S)
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (UNIT, LIGHT)}
    for seed in SEEDS:
        text, reason = generate(engine, tool_call_grammar([UNIT, LIGHT], parallel=False), seed)
        assert reason == "stop", text
        match = call.fullmatch(text)
        assert match, text
        parsed = json.loads(match[1])
        assert set(parsed) == {"name", "arguments"}, parsed
        jsonschema.validate(parsed["arguments"], schemas[parsed["name"]])
