"""Malformed and hostile requests across every endpoint: each gets its 4xx in OpenAI's error shape,
and the server goes on serving. (security.md lists where servers like ours went wrong.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.serving.fake_engine import FakeEngine

M = "fake-model"
USER = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": M, "messages": USER, **fields}


def raw(text: str | bytes) -> bytes:
    return text.encode() if isinstance(text, str) else text


# (name, method, path, json body or raw bytes, status)
CASES: list[tuple[str, str, str, Any, int]] = [
    ("not json", "POST", CHAT, raw("{nope"), 400),
    ("json array", "POST", CHAT, [1, 2], 400),
    ("json string", "POST", CHAT, "hello", 400),
    ("empty body", "POST", CHAT, raw(b""), 400),
    ("invalid utf-8", "POST", CHAT, raw(b'{"model": "\xff\xfe", "messages": []}'), 400),
    ("model missing", "POST", CHAT, {"messages": USER}, 400),
    ("model empty", "POST", CHAT, chat(model=""), 400),
    ("model huge", "POST", CHAT, chat(model="m" * 300), 400),
    ("model unknown", "POST", CHAT, chat(model="gpt-4"), 404),
    ("adapter of unknown model", "POST", CHAT, chat(model=f"{M}:nope"), 404),
    ("messages missing", "POST", CHAT, {"model": M}, 400),
    ("messages empty", "POST", CHAT, chat(messages=[]), 400),
    ("messages not list", "POST", CHAT, chat(messages="hi"), 400),
    ("message not object", "POST", CHAT, chat(messages=["hi"]), 400),
    ("role missing", "POST", CHAT, chat(messages=[{"content": "hi"}]), 400),
    ("role unknown", "POST", CHAT, chat(messages=[{"role": "root", "content": "hi"}]), 400),
    ("content number", "POST", CHAT, chat(messages=[{"role": "user", "content": 42}]), 400),
    (
        "content image part",
        "POST",
        CHAT,
        chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
        400,
    ),
    ("user content null", "POST", CHAT, chat(messages=[{"role": "user", "content": None}]), 400),
    ("too many messages", "POST", CHAT, chat(messages=USER * 1100), 400),
    (
        "user with tool_calls",
        "POST",
        CHAT,
        chat(
            messages=[
                {
                    "role": "user",
                    "content": "x",
                    "tool_calls": [
                        {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                }
            ]
        ),
        400,
    ),
    ("temperature negative", "POST", CHAT, chat(temperature=-0.5), 400),
    (
        "temperature NaN",
        "POST",
        CHAT,
        raw('{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}'),
        400,
    ),
    (
        "temperature Infinity",
        "POST",
        CHAT,
        raw(
            '{"model": "fake-model", "messages": [{"role": "user", '
            '"content": "hi"}], "temperature": Infinity}'
        ),
        400,
    ),
    ("temperature string", "POST", CHAT, chat(temperature="hot"), 400),
    ("temperature huge", "POST", CHAT, chat(temperature=999999), 400),
    ("top_p negative", "POST", CHAT, chat(top_p=-1), 400),
    ("top_p above one", "POST", CHAT, chat(top_p=2), 400),
    ("top_k negative", "POST", CHAT, chat(top_k=-5), 400),
    ("min_p above one", "POST", CHAT, chat(min_p=1.5), 400),
    ("presence_penalty huge", "POST", CHAT, chat(presence_penalty=100), 400),
    ("frequency_penalty huge", "POST", CHAT, chat(frequency_penalty=-100), 400),
    ("repeat_penalty zero", "POST", CHAT, chat(repeat_penalty=0), 400),
    ("max_tokens negative", "POST", CHAT, chat(max_tokens=-1), 400),
    ("max_tokens zero", "POST", CHAT, chat(max_tokens=0), 400),
    ("max_tokens string", "POST", CHAT, chat(max_tokens="ten"), 400),
    ("n five", "POST", CHAT, chat(n=5), 400),
    ("n zero", "POST", CHAT, chat(n=0), 400),
    ("logprobs", "POST", CHAT, chat(logprobs=True), 400),
    ("top_logprobs", "POST", CHAT, chat(top_logprobs=5), 400),
    ("logit_bias", "POST", CHAT, chat(logit_bias={"1": 100}), 400),
    ("too many stops", "POST", CHAT, chat(stop=[f"s{i}" for i in range(100)]), 400),
    ("empty stop in list", "POST", CHAT, chat(stop=["a", ""]), 400),
    ("stop number", "POST", CHAT, chat(stop=5), 400),
    ("seed out of range", "POST", CHAT, chat(seed=-(2**70)), 400),
    ("stream object", "POST", CHAT, chat(stream={"a": 1}), 400),
    ("template kwarg tokenize", "POST", CHAT, chat(chat_template_kwargs={"tokenize": True}), 400),
    ("template kwargs not object", "POST", CHAT, chat(chat_template_kwargs="thinking"), 400),
    ("think maybe", "POST", CHAT, chat(think="maybe"), 400),
    ("reasoning_effort extreme", "POST", CHAT, chat(reasoning_effort="extreme"), 400),
    ("conflicting think switches", "POST", CHAT, chat(think=True, reasoning_effort="none"), 400),
    ("negative reasoning budget", "POST", CHAT, chat(max_reasoning_tokens=-1), 400),
    ("reasoning_format xml", "POST", CHAT, chat(reasoning_format="xml"), 400),
    ("tools not list", "POST", CHAT, chat(tools={"a": 1}), 400),
    ("tool without function", "POST", CHAT, chat(tools=[{"type": "function"}]), 400),
    (
        "tool name with spaces",
        "POST",
        CHAT,
        chat(tools=[{"type": "function", "function": {"name": "a b"}}]),
        400,
    ),
    (
        "tool parameters string",
        "POST",
        CHAT,
        chat(tools=[{"type": "function", "function": {"name": "f", "parameters": "{}"}}]),
        400,
    ),
    (
        "too many tools",
        "POST",
        CHAT,
        chat(tools=[{"type": "function", "function": {"name": f"f{i}"}} for i in range(200)]),
        400,
    ),
    ("duplicate tool names", "POST", CHAT, chat(tools=[TOOL, TOOL]), 400),
    ("tool_choice unknown word", "POST", CHAT, chat(tools=[TOOL], tool_choice="sometimes"), 400),
    (
        "tool_choice missing tool",
        "POST",
        CHAT,
        chat(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "g"}}),
        400,
    ),
    ("tool_choice without tools", "POST", CHAT, chat(tool_choice="required"), 400),
    ("response_format xml", "POST", CHAT, chat(response_format={"type": "xml"}), 400),
    (
        "response_format schema with not",
        "POST",
        CHAT,
        chat(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"not": {"type": "string"}}},
            }
        ),
        400,
    ),
    ("response_format schema missing", "POST", CHAT, chat(response_format={"type": "json_schema"}), 400),
    ("legacy functions", "POST", CHAT, chat(functions=[{"name": "f"}]), 400),
    ("context length exceeded", "POST", CHAT, chat(messages=[{"role": "user", "content": "w " * 500}]), 400),
    ("completions prompt missing", "POST", COMPLETIONS, {"model": M}, 400),
    ("completions two prompts", "POST", COMPLETIONS, {"model": M, "prompt": ["a", "b"]}, 400),
    ("completions prompt number", "POST", COMPLETIONS, {"model": M, "prompt": 7}, 400),
    ("completions echo", "POST", COMPLETIONS, {"model": M, "prompt": "a", "echo": True}, 400),
    ("completions best_of", "POST", COMPLETIONS, {"model": M, "prompt": "a", "best_of": 3}, 400),
    ("completions suffix", "POST", COMPLETIONS, {"model": M, "prompt": "a", "suffix": "z"}, 400),
    ("completions unknown model", "POST", COMPLETIONS, {"model": "x", "prompt": "a"}, 404),
    ("adapter name traversal", "POST", "/v1/adapters", {"name": "../../etc/passwd"}, 400),
    ("adapter name missing", "POST", "/v1/adapters", {}, 400),
    ("adapter extra field path", "POST", "/v1/adapters", {"name": "a", "path": "/etc/passwd"}, 400),
    ("adapter not registered", "POST", "/v1/adapters", {"name": "nope"}, 404),
    ("unload adapter not loaded", "DELETE", "/v1/adapters/nope", None, 404),
    ("model detail unknown", "GET", "/v1/models/gpt-4", None, 404),
    ("unknown path", "GET", "/v1/nothing", None, 404),
    ("wrong method", "GET", CHAT, None, 405),
    ("body too large", "POST", CHAT, chat(messages=[{"role": "user", "content": "x" * (9 << 20)}]), 413),
]


def test_the_suite_is_large_enough() -> None:
    assert len(CASES) >= 50 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("name", "method", "path", "body", "status"), CASES, ids=[c[0] for c in CASES])
async def test_bad_request(
    make_client: Any, name: str, method: str, path: str, body: Any, status: int
) -> None:
    async with make_client(FakeEngine(context=300)) as (http, engine):
        kwargs: dict[str, Any] = {}
        if isinstance(body, bytes):
            kwargs = {"content": body, "headers": {"content-type": "application/json"}}
        elif body is not None:
            kwargs = {"content": json.dumps(body).encode(), "headers": {"content-type": "application/json"}}
        r = await http.request(method, path, **kwargs)
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"]
        assert "Traceback" not in r.text
        # and the server goes on serving
        ok = await http.post(CHAT, json=chat())
        assert ok.status_code == 200
        assert len(engine.streams) == 1  # nothing was generated for the bad request
