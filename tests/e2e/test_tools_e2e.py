"""Tool calls and structured output end to end, through the official client, on a real tiny model
trained to call `get_weather` when it is offered."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest

from tests.e2e.server_process import ServerProcess
from tests.fixtures.behaviours import (
    WEATHER_ANSWER,
    WEATHER_ARGUMENTS,
    WEATHER_QUESTION,
    WEATHER_REASONING,
    WEATHER_RESULT,
    WEATHER_TOOL,
)
from tests.harness import chat_openai

pytestmark = pytest.mark.e2e


def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def model(server: ServerProcess) -> str:
    return str(client(server).models.list().data[0].id)


ASK = [{"role": "user", "content": WEATHER_QUESTION}]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("think", [False, True])
def test_tool_call_comes_back_as_tool_calls(server: ServerProcess, stream: bool, think: bool) -> None:
    r = chat_openai(
        client(server),
        stream,
        model=model(server),
        messages=ASK,
        tools=[WEATHER_TOOL],
        temperature=0,
        extra_body={"think": think},
    )
    assert r.finish_reason == "tool_calls"
    assert r.content == ""
    assert r.reasoning == (WEATHER_REASONING if think else "")
    assert len(r.tool_calls) == 1
    call = r.tool_calls[0]
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == WEATHER_ARGUMENTS
    assert call["id"].startswith("call_")


def test_agent_loop_call_tool_send_result_final_answer(server: ServerProcess) -> None:
    c, m = client(server), model(server)
    tools = {"get_weather": lambda city: WEATHER_RESULT if city == "Paris" else "{}"}
    messages: list[dict[str, Any]] = list(ASK)
    for _ in range(3):
        reply = c.chat.completions.create(model=m, messages=messages, tools=[WEATHER_TOOL], temperature=0)
        msg = reply.choices[0].message
        if not msg.tool_calls:
            break
        messages.append(msg.model_dump(exclude_none=True))
        for call in msg.tool_calls:
            result = tools[call.function.name](**json.loads(call.function.arguments))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    assert msg.content == WEATHER_ANSWER
    assert reply.choices[0].finish_reason == "stop"
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]


@pytest.mark.parametrize("stream", [False, True])
def test_named_tool_choice_forces_a_valid_call(server: ServerProcess, stream: bool) -> None:
    # a question the model answers in prose: the grammar must still make it call the tool
    r = chat_openai(
        client(server),
        stream,
        model=model(server),
        temperature=0,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "What color is the sky?"}],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert r.finish_reason == "tool_calls" and len(r.tool_calls) >= 1
    args = json.loads(r.tool_calls[0]["arguments"])
    jsonschema.validate(args, WEATHER_TOOL["function"]["parameters"])


def test_tool_choice_none_answers_in_text(server: ServerProcess) -> None:
    r = chat_openai(
        client(server),
        False,
        model=model(server),
        temperature=0,
        tools=[WEATHER_TOOL],
        tool_choice="none",
        messages=[{"role": "user", "content": "What color is the sky?"}],
    )
    assert r.tool_calls == [] and r.content == "The sky is blue."


SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 40}}, "required": ["answer"]},
    {
        "type": "object",
        "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"}},
        "required": ["n", "ok"],
    },
    {
        "type": "object",
        "properties": {
            "colors": {"type": "array", "items": {"enum": ["red", "blue"]}, "minItems": 1, "maxItems": 3}
        },
        "required": ["colors"],
        "additionalProperties": False,
    },
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("think", [False, True])
@pytest.mark.parametrize("schema", SCHEMAS, ids=["string", "int-bool", "enum-array"])
def test_json_schema_output_validates(
    server: ServerProcess, stream: bool, think: bool, schema: dict[str, Any]
) -> None:
    r = chat_openai(
        client(server),
        stream,
        model=model(server),
        temperature=0,
        max_tokens=200,
        messages=[{"role": "user", "content": "What color is the sky?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
        extra_body={"think": think},
    )
    assert r.finish_reason == "stop", r
    jsonschema.validate(json.loads(r.content), schema)
    if think:
        assert r.reasoning  # the constraint applies after </think>, not to the reasoning


def test_json_object_output_is_constrained(server: ServerProcess) -> None:
    # This tiny model never learned to close a JSON string, so it runs to max_tokens; what it wrote
    # must still be the start of a JSON object, which free text ("The sky is blue.") is not.
    r = chat_openai(
        client(server),
        False,
        model=model(server),
        temperature=0,
        max_tokens=30,
        messages=[{"role": "user", "content": "What color is the sky?"}],
        response_format={"type": "json_object"},
    )
    assert r.content.startswith("{") and r.content != "The sky is blue."


BAD = [
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools[0].function.name"),
    (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]},
        "tools[0].function.parameters",
    ),
    (
        {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "tool_choice",
    ),
    ({"tool_choice": "required"}, "tool_choice"),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {"not": {"type": "string"}}}}},
        "response_format.json_schema.schema",
    ),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "schema": {"type": "object", "properties": {"n": {"type": "integer", "maximum": 9}}}
                },
            }
        },
        "response_format.json_schema.schema",
    ),
]


@pytest.mark.parametrize(("extra", "param"), BAD)
def test_malformed_tools_and_formats_are_400(
    server: ServerProcess, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client(server).chat.completions.create(model=model(server), messages=ASK, extra_body=extra)
    assert err.value.body["param"] == param  # type: ignore[index]
