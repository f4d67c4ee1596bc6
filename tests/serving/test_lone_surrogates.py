"""A lone UTF-16 surrogate (the JSON escape `\\ud800`: legal JSON, not encodable as UTF-8) in any text
field of any endpoint gets a 400 naming the field, never a 5xx, and the server serves on.

The cases are generated: each endpoint has one request that uses every text field it reads, and each
string in it (and each object key) is spoiled in turn, so a field added to a request is covered here
by adding it to that request.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.serving.fake_engine import FakeEngine

M = "fake-model"
SURROGATE = "\ud800"
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "look a word up",
        "parameters": {"type": "object", "properties": {"word": {"type": "string", "description": "w"}}},
    },
}
FULL_CHAT: dict[str, Any] = {
    "model": M,
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "name": "ann", "content": [{"type": "text", "text": "hello"}]},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "thought",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"w": 1}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "found"},
        {"role": "user", "content": "and now?"},
    ],
    "tools": [TOOL],
    "tool_choice": {"type": "function", "function": {"name": "lookup"}},
    "stop": ["END"],
    "user": "u1",
    "reasoning_format": "separate",
    "max_tokens": 8,
}
FULL_SCHEMA_CHAT: dict[str, Any] = {
    "model": M,
    "messages": [{"role": "user", "content": "hi"}],
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
        },
    },
}
FULL_COMPLETION: dict[str, Any] = {
    "model": M,
    "prompt": ["once"],
    "stop": "END",
    "user": "u1",
    "max_tokens": 8,
}
FULL_ADAPTER: dict[str, Any] = {"name": "zephyr"}
FULL_RESPONSES: dict[str, Any] = {
    "model": M,
    "instructions": "be brief",
    "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "hello"}]},
        {"type": "reasoning", "content": [{"type": "reasoning_text", "text": "thought"}]},
        {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": '{"w": 1}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "found"},
        {"role": "user", "content": "and now?"},
    ],
    "tools": [{"type": "function", **TOOL["function"]}],
    "tool_choice": {"type": "function", "name": "lookup"},
    "text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}}},
    "reasoning": {"effort": "low"},
    "metadata": {"k": "v"},
    "user": "u1",
}


def spoiled(body: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (field path, copy of body with that string or key given a lone surrogate)."""
    if isinstance(body, str):
        yield path, body + SURROGATE
    elif isinstance(body, dict):
        for key, value in body.items():
            where = f"{path}.{key}" if path else key
            for field, bad in spoiled(value, where):
                yield field, {**body, key: bad}
        if path:  # a spoiled key inside a nested object (a tool schema's property name, say)
            yield path, {**copy.deepcopy(body), "x" + SURROGATE: 1}
    elif isinstance(body, list):
        for i, item in enumerate(body):
            for field, bad in spoiled(item, f"{path}[{i}]"):
                yield field, [*body[:i], bad, *body[i + 1 :]]


CASES = [
    (endpoint, field, bad)
    for endpoint, full in (
        ("/v1/chat/completions", FULL_CHAT),
        ("/v1/chat/completions", FULL_SCHEMA_CHAT),
        ("/v1/completions", FULL_COMPLETION),
        ("/v1/adapters", FULL_ADAPTER),
        ("/v1/responses", FULL_RESPONSES),
    )
    for field, bad in spoiled(full)
]


def test_every_text_field_is_covered() -> None:
    fields = {field for _, field, _ in CASES}
    for expected in (
        "model",
        "messages[0].content",
        "messages[1].content[0].text",
        "messages[1].name",
        "messages[2].tool_calls[0].function.arguments",
        "messages[3].tool_call_id",
        "tools[0].function.parameters.properties.word",
        "prompt[0]",
        "name",
        "input[2].arguments",
        "input[3].output",
    ):
        assert expected in fields
    assert len(CASES) > 40


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("endpoint", "field", "body"), CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
async def test_a_lone_surrogate_is_a_400_naming_the_field(
    make_client: Any, endpoint: str, field: str, body: dict[str, Any], stream: bool
) -> None:
    if stream and endpoint == "/v1/adapters":
        pytest.skip("the adapters endpoint does not stream")
    async with make_client(FakeEngine()) as (http, engine):
        payload = {**body, "stream": True} if stream else body
        # json.dumps writes the lone surrogate as the escape \ud800, exactly as a client would send it
        r = await http.post(
            endpoint, content=json.dumps(payload).encode(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == field
        assert field in err["message"] and "surrogate" in err["message"]
        assert engine.streams == []
        ok = await http.post(
            "/v1/chat/completions", json={"model": M, "messages": [{"role": "user", "content": "hi"}]}
        )
        assert ok.status_code == 200


@pytest.mark.parametrize("path", ["/v1/adapters/%ED%A0%80", "/v1/models/%ED%A0%80", "/v1/models/a%ED%A0%80b"])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_an_undecodable_path_is_a_4xx(make_client: Any, method: str, path: str) -> None:
    async with make_client(FakeEngine()) as (http, _engine):
        r = await http.request(method, path)
        assert 400 <= r.status_code < 500, r.text
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
