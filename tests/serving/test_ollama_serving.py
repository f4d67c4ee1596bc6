"""Ollama's API over the scripted engine: wire shapes, reasoning, tool calls, options, errors.

Every generation case runs streamed (NDJSON) and whole; the test folds the lines itself.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.fixtures.behaviours import WEATHER_ARGUMENTS, WEATHER_CALL_TEXT, WEATHER_TOOL
from tests.serving.fake_engine import FakeEngine
from tests.serving.test_lone_surrogates import spoiled

MSG = [{"role": "user", "content": "What is the capital of France?"}]
CHAT: dict[str, Any] = {"model": "fake-model", "messages": MSG}
THINKING = "<think>\nFrance is in Europe.\n</think>\nParis."


async def ollama(http: httpx.AsyncClient, path: str, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """The reply as one object: the whole reply, or the streamed lines joined the way clients do."""
    r = await http.post(path, json=body | {"stream": stream})
    assert r.status_code == 200, r.text
    if not stream:
        return dict(r.json())
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert all(not line["done"] for line in lines[:-1]) and lines[-1]["done"]
    out = dict(lines[-1])
    key = "message" if "message" in out else None
    parts = [line[key] if key else line for line in lines]
    text = "content" if key else "response"
    joined: dict[str, Any] = {text: "".join(p.get(text, "") for p in parts)}
    if any(p.get("thinking") for p in parts):
        joined["thinking"] = "".join(p.get("thinking", "") for p in parts)
    calls = [c for p in parts for c in p.get("tool_calls") or []]
    if calls:
        joined["tool_calls"] = calls
    if key:
        out["message"] = {"role": "assistant"} | joined
    else:
        out |= joined
    return out


def counts(reply: dict[str, Any]) -> None:
    assert reply["prompt_eval_count"] > 0 and reply["eval_count"] > 0
    for name in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(reply[name], int) and reply[name] >= 0


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("chunk", [1, 4])
async def test_chat_think_puts_reasoning_in_message_thinking(
    make_client: Any, stream: bool, chunk: int
) -> None:
    async with make_client(FakeEngine(reply=THINKING, chunk=chunk)) as (http, engine):
        reply = await ollama(http, "/api/chat", CHAT | {"think": True}, stream)
    assert engine.requests[-1].reasoning.thinking
    assert reply["message"] == {"role": "assistant", "content": "Paris.", "thinking": "France is in Europe."}
    assert reply["done"] and reply["done_reason"] == "stop" and reply["model"] == "fake-model"
    counts(reply)


@pytest.mark.parametrize("stream", [False, True])
async def test_chat_tool_call_has_arguments_as_an_object(make_client: Any, stream: bool) -> None:
    async with make_client(FakeEngine(reply=WEATHER_CALL_TEXT)) as (http, _):
        reply = await ollama(http, "/api/chat", CHAT | {"tools": [WEATHER_TOOL]}, stream)
    (call,) = reply["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert call["function"]["arguments"] == WEATHER_ARGUMENTS
    assert reply["message"]["content"] == ""
    assert reply["done_reason"] == "stop"


async def test_chat_history_with_tool_calls_and_results_renders(client: Any) -> None:
    http, engine = client
    messages = [
        *MSG,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": '{"forecast": "sunny"}', "tool_name": "get_weather"},
    ]
    r = await http.post(
        "/api/chat", json=CHAT | {"messages": messages, "tools": [WEATHER_TOOL], "stream": False}
    )
    assert r.status_code == 200, r.text
    assert '"city": "Paris"' in engine.requests[-1].prompt and "sunny" in engine.requests[-1].prompt


@pytest.mark.parametrize("stream", [False, True])
async def test_generate_answers_in_response(make_client: Any, stream: bool) -> None:
    async with make_client(FakeEngine(reply=THINKING)) as (http, engine):
        body = {
            "model": "fake-model:latest",
            "prompt": "Capital of France?",
            "system": "Be terse.",
            "think": True,
        }
        reply = await ollama(http, "/api/generate", body, stream)
    assert (reply["response"], reply["thinking"]) == ("Paris.", "France is in Europe.")
    assert reply["model"] == "fake-model:latest"
    assert "Be terse." in engine.requests[-1].prompt
    counts(reply)


@pytest.mark.parametrize("stream", [False, True])
async def test_length_is_the_done_reason_when_num_predict_ends_it(make_client: Any, stream: bool) -> None:
    engine = FakeEngine(reply="abcdefghijkl", chunk=1, finish_reason="length")
    async with make_client(engine) as (http, _):
        reply = await ollama(http, "/api/chat", CHAT | {"options": {"num_predict": 3}}, stream)
    assert engine.requests[-1].max_tokens == 3
    assert reply["message"]["content"] == "abc" and reply["done_reason"] == "length"


async def test_options_reach_the_engine(client: Any) -> None:
    http, engine = client
    options = {"temperature": 0, "top_p": 0.5, "top_k": 7, "seed": 42, "stop": ["END"], "num_ctx": 4096}
    r = await http.post("/api/chat", json=CHAT | {"options": options | {"num_gpu": 99}, "stream": False})
    assert r.status_code == 200, r.text
    gen = engine.requests[-1]
    assert (gen.sampling.temperature, gen.sampling.top_p, gen.sampling.top_k) == (0, 0.5, 7)
    assert gen.sampling.seed == 42 and gen.stop == ("END",)


@pytest.mark.parametrize("fmt", ["json", {"type": "object", "properties": {"a": {"type": "integer"}}}])
async def test_format_becomes_a_grammar(client: Any, fmt: Any) -> None:
    http, engine = client
    r = await http.post("/api/chat", json=CHAT | {"format": fmt, "stream": False})
    assert r.status_code == 200, r.text
    assert engine.requests[-1].grammar is not None


async def test_empty_chat_or_prompt_just_loads(client: Any) -> None:
    http, engine = client
    r = await http.post("/api/chat", json={"model": "fake-model", "messages": []})
    assert r.json()["done_reason"] == "load"
    r = await http.post("/api/generate", json={"model": "fake-model", "keep_alive": 0, "stream": False})
    assert r.json()["done_reason"] == "unload" and r.json()["response"] == ""
    assert engine.requests == []


ERRORS = [
    # (path, body, status, words in the message)
    ("/api/chat", CHAT | {"model": "nope"}, 404, "nope"),
    ("/api/chat", CHAT | {"messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
    ("/api/chat", {"messages": MSG}, 400, "model"),
    ("/api/chat", CHAT | {"options": {"temperature": 99}}, 400, "options.temperature"),
    ("/api/chat", CHAT | {"options": {"num_ctx": 1_000_000}}, 400, "at most 4096"),
    ("/api/chat", CHAT | {"messages": [{"role": "user", "content": "\ud800"}]}, 400, "surrogate"),
    ("/api/chat", CHAT | {"messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}, 400, "images"),
    ("/api/chat", CHAT | {"format": "xml"}, 400, "format"),
    ("/api/generate", {"model": "fake-model", "prompt": "x", "raw": True}, 400, "raw"),
    ("/api/show", {"model": "nope"}, 404, "nope"),
    ("/api/show", {}, 400, "model"),
]


@pytest.mark.parametrize(("path", "body", "status", "words"), ERRORS)
async def test_errors_have_ollamas_shape(
    client: Any, path: str, body: dict[str, Any], status: int, words: str
) -> None:
    http, _ = client
    r = await http.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert list(r.json()) == ["error"] and isinstance(r.json()["error"], str)
    assert words in r.json()["error"]


async def test_bad_json_has_ollamas_shape(client: Any) -> None:
    http, _ = client
    r = await http.post("/api/chat", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and list(r.json()) == ["error"]


async def test_engine_error_mid_stream_is_an_error_line(make_client: Any) -> None:
    async with make_client(FakeEngine(reply="partial", error="decode failed")) as (http, _):
        r = await http.post("/api/chat", json=CHAT)
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert lines[-1] == {"error": "decode failed"}
        r = await http.post("/api/chat", json=CHAT | {"stream": False})
        assert r.status_code == 500 and r.json() == {"error": "decode failed"}


async def test_model_listings(client: Any) -> None:
    http, engine = client
    assert (await http.get("/api/version")).json()["version"]
    (tag,) = (await http.get("/api/tags")).json()["models"]
    assert tag["name"] == tag["model"] == "fake-model:latest"
    assert tag["details"]["format"] == "gguf" and tag["details"]["family"] == "qwen3"
    (running,) = (await http.get("/api/ps")).json()["models"]
    assert running["name"] == "fake-model:latest" and running["context_length"] == engine.context
    shown = (await http.post("/api/show", json={"model": "fake-model:latest"})).json()
    assert set(shown["capabilities"]) >= {"completion", "tools", "thinking"}
    assert shown["model_info"]["qwen3.context_length"] == engine.info.train_context_length
    assert f"num_ctx {engine.context}" in " ".join(shown["parameters"].split())


async def test_refusals_before_the_route_have_ollamas_shape_too(make_client: Any) -> None:
    async with make_client(FakeEngine(), api_key=["sk-user"]) as (http, _):
        r = await http.get("/api/tags")
        assert r.status_code == 401 and list(r.json()) == ["error"]
        r = await http.get("/api/tags", headers={"authorization": "Bearer sk-user"})
        assert r.status_code == 200
        r = await http.get("/api/nothing-here", headers={"authorization": "Bearer sk-user"})
        assert r.status_code == 404 and list(r.json()) == ["error"]


FULL_OLLAMA_CHAT: dict[str, Any] = {
    "model": "fake-model:latest",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello"},
        {
            "role": "assistant",
            "content": "",
            "thinking": "thought",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ],
    "tools": [WEATHER_TOOL],
    "format": {"type": "object", "properties": {"a": {"type": "string"}}},
    "options": {"stop": ["END"]},
    "keep_alive": "5m",
}
FULL_OLLAMA_GENERATE: dict[str, Any] = {"model": "fake-model", "prompt": "hi", "system": "be brief"}
SURROGATE_CASES = [
    (path, field, bad)
    for path, full in (("/api/chat", FULL_OLLAMA_CHAT), ("/api/generate", FULL_OLLAMA_GENERATE))
    for field, bad in spoiled(full)
]


@pytest.mark.parametrize(
    ("path", "field", "body"), SURROGATE_CASES, ids=[f"{c[0]}:{c[1]}" for c in SURROGATE_CASES]
)
async def test_a_lone_surrogate_anywhere_is_a_400_naming_the_field(
    client: Any, path: str, field: str, body: dict[str, Any]
) -> None:
    http, engine = client
    r = await http.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert field in r.json()["error"] and "surrogate" in r.json()["error"]
    assert engine.streams == []


@pytest.mark.parametrize(
    ("path", "body"), [("/api/chat", FULL_OLLAMA_CHAT), ("/api/generate", FULL_OLLAMA_GENERATE)]
)
async def test_the_full_requests_are_served(client: Any, path: str, body: dict[str, Any]) -> None:
    http, _ = client
    r = await http.post(path, json=body | {"stream": False})
    assert r.status_code == 200, r.text
