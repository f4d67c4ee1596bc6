"""The HTTP layer over a scripted engine: wire shapes, reasoning split, switches, errors.

Every behaviour runs streaming and non-streaming through tests/harness.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from hermesd.models.formats.hermes import THINKING_PROMPT
from tests.harness import chat_http, parse_sse
from tests.serving.fake_engine import FakeEngine

MSG = [{"role": "user", "content": "What is the capital of France?"}]
BODY: dict[str, Any] = {"model": "fake-model", "messages": MSG}

SPLITS = [
    # (model output, expected reasoning, expected content)
    ("Paris.", "", "Paris."),
    ("<think>\nFrance is in Europe.\n</think>\nParis.", "France is in Europe.", "Paris."),
    ("<think>never closed", "never closed", ""),
    ("Use `</think>` carefully.", "", "Use `</think>` carefully."),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("reply", "reasoning", "content"), SPLITS)
@pytest.mark.parametrize("chunk", [1, 4])
async def test_reasoning_is_separated_the_same_way_streaming_or_not(
    make_client: Any, stream: bool, reply: str, reasoning: str, content: str, chunk: int
) -> None:
    async with make_client(FakeEngine(reply=reply, chunk=chunk)) as (client, _):
        result = await chat_http(client, BODY, stream)
    assert (result.reasoning, result.content) == (reasoning, content)
    assert result.finish_reason == "stop"
    assert result.usage is not None and result.usage["completion_tokens"] > 0


@pytest.mark.parametrize("stream", [False, True])
async def test_inline_reasoning_format_keeps_the_tags(make_client: Any, stream: bool) -> None:
    reply = "<think>hm</think>Paris."
    async with make_client(FakeEngine(reply=reply)) as (client, _):
        result = await chat_http(client, dict(BODY, reasoning_format="inline"), stream)
    assert result.content == reply and result.reasoning == ""


THINK_ON = [
    {"think": True},
    {"reasoning_effort": "high"},
    {"chat_template_kwargs": {"thinking": True}},
    {"chat_template_kwargs": {"enable_thinking": True}},
    {"reasoning": {"enabled": True}},
]
THINK_OFF = [
    {},
    {"think": False},
    {"reasoning_effort": "none"},
    {"chat_template_kwargs": {"thinking": False}},
]


@pytest.mark.parametrize("switch", THINK_ON)
@pytest.mark.parametrize("system", [None, "You are terse."])
async def test_each_think_switch_puts_the_deep_thinking_prompt_in(
    client: Any, switch: dict[str, Any], system: str | None
) -> None:
    http, engine = client
    messages = ([{"role": "system", "content": system}] if system else []) + MSG
    r = await http.post("/v1/chat/completions", json=dict(BODY, messages=messages, **switch))
    assert r.status_code == 200, r.text
    prompt = engine.requests[-1].prompt
    assert THINKING_PROMPT in prompt
    if system:
        assert system in prompt
    assert engine.requests[-1].reasoning.thinking


@pytest.mark.parametrize("switch", THINK_OFF)
async def test_thinking_is_off_unless_asked(client: Any, switch: dict[str, Any]) -> None:
    http, engine = client
    r = await http.post("/v1/chat/completions", json=dict(BODY, **switch))
    assert r.status_code == 200, r.text
    assert THINKING_PROMPT not in engine.requests[-1].prompt
    assert "You are Hermes, created by Nous Research." in engine.requests[-1].prompt


async def test_server_think_default_flips_the_default(make_client: Any) -> None:
    async with make_client(think=True) as (http, engine):
        await http.post("/v1/chat/completions", json=BODY)
        await http.post("/v1/chat/completions", json=dict(BODY, think=False))
    assert THINKING_PROMPT in engine.requests[0].prompt
    assert THINKING_PROMPT not in engine.requests[1].prompt


async def test_reasoning_budget_reaches_the_engine(make_client: Any) -> None:
    async with make_client(reasoning_budget=50) as (http, engine):
        await http.post("/v1/chat/completions", json=dict(BODY, think=True))
        await http.post("/v1/chat/completions", json=dict(BODY, think=True, max_reasoning_tokens=7))
    assert engine.requests[0].reasoning.budget == 50
    assert engine.requests[1].reasoning.budget == 7


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.mark.parametrize("think", [False, True])
async def test_a_forced_call_waits_for_the_reasoning_to_close(client: Any, think: bool) -> None:
    http, engine = client
    body = dict(BODY, tools=[WEATHER], tool_choice="required", think=think)
    r = await http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    gen = engine.requests[-1]
    assert gen.grammar is not None
    assert gen.grammar_trigger == gen.reasoning.constraint_trigger == ("</think>" if think else None)
    assert gen.grammar.startswith('root ::= "</think>"') == think


async def test_sampling_defaults_follow_the_model_card(client: Any) -> None:
    http, engine = client
    await http.post("/v1/chat/completions", json=BODY)
    s = engine.requests[-1].sampling
    assert (s.temperature, s.top_p, s.top_k) == (0.6, 0.95, 20)
    await http.post("/v1/chat/completions", json=dict(BODY, temperature=0, top_k=5, seed=3, stop=["x"]))
    req = engine.requests[-1]
    assert (req.sampling.temperature, req.sampling.top_k, req.sampling.seed, req.stop) == (0, 5, 3, ("x",))


async def test_max_tokens_and_length_finish(make_client: Any) -> None:
    async with make_client(FakeEngine(reply="abcdefghijkl", chunk=1, finish_reason="length")) as (http, eng):
        r = await http.post("/v1/chat/completions", json=dict(BODY, max_completion_tokens=4))
    body = r.json()
    assert eng.requests[-1].max_tokens == 4
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 4
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 4


async def test_stream_shape_and_usage(client: Any) -> None:
    http, _ = client
    r = await http.post(
        "/v1/chat/completions", json=dict(BODY, stream=True, stream_options={"include_usage": True})
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert events[-1] == "[DONE]"
    first, last_choice, usage = events[0], events[-3], events[-2]
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert last_choice["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0


async def test_error_during_stream_is_one_event_then_done(make_client: Any) -> None:
    async with make_client(FakeEngine(reply="partial", error="decode failed")) as (http, _):
        r = await http.post("/v1/chat/completions", json=dict(BODY, stream=True))
        events = parse_sse(r.text)
        assert r.status_code == 200
        assert events[-1] == "[DONE]"
        assert events[-2]["error"]["message"] == "decode failed"
        r2 = await http.post("/v1/chat/completions", json=BODY)
        assert r2.status_code == 500 and r2.json()["error"]["type"] == "server_error"


async def test_models_and_health(client: Any) -> None:
    http, _ = client
    assert (await http.get("/health")).json() == {"status": "ok"}
    data = (await http.get("/v1/models")).json()
    assert data["object"] == "list" and [m["id"] for m in data["data"]] == ["fake-model"]


async def test_served_model_name_aliases(make_client: Any) -> None:
    async with make_client(served_model_name=["hermes", "h4"]) as (http, _):
        ids = [m["id"] for m in (await http.get("/v1/models")).json()["data"]]
        assert ids == ["hermes", "h4"]
        assert (await http.post("/v1/chat/completions", json=dict(BODY, model="h4"))).status_code == 200
        assert (await http.post("/v1/chat/completions", json=BODY)).status_code == 404


async def test_completions_endpoint(client: Any) -> None:
    http, engine = client
    r = await http.post(
        "/v1/completions", json={"model": "fake-model", "prompt": "Once upon", "max_tokens": 3}
    )
    body = r.json()
    assert r.status_code == 200 and body["object"] == "text_completion"
    assert engine.requests[-1].prompt == "Once upon"
    assert body["choices"][0]["text"] == "Hello the"[: len(body["choices"][0]["text"])]
    r = await http.post("/v1/completions", json={"model": "fake-model", "prompt": "x", "stream": True})
    events = parse_sse(r.text)
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "stop"


BAD = [
    # (body, status, param substring)
    (dict(BODY, model="nope"), 404, "model"),
    (dict(BODY, n=2), 400, "n"),
    (dict(BODY, logprobs=True), 400, "logprobs"),
    (dict(BODY, temperature=-1), 400, "temperature"),
    (dict(BODY, top_p=0), 400, "top_p"),
    (dict(BODY, messages=[]), 400, "messages"),
    (dict(BODY, messages=[{"role": "wizard", "content": "x"}]), 400, "messages[0].role"),
    (dict(BODY, messages=[{"role": "user", "content": 5}]), 400, "messages[0].content"),
    (dict(BODY, chat_template_kwargs={"tokenize": True}), 400, "chat_template_kwargs.tokenize"),
    (dict(BODY, think=True, reasoning_effort="none"), 400, "think"),
    (dict(BODY, max_tokens=0), 400, "max_tokens"),
    ({"messages": MSG}, 400, "model"),
]


@pytest.mark.parametrize(("body", "status", "param"), BAD)
async def test_bad_requests_get_openai_errors(
    client: Any, body: dict[str, Any], status: int, param: str
) -> None:
    http, _ = client
    r = await http.post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert param in (err["param"] or ""), err
    assert (await http.post("/v1/chat/completions", json=BODY)).status_code == 200


async def test_invalid_json_body(client: Any) -> None:
    http, _ = client
    r = await http.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]


async def test_context_length_exceeded(make_client: Any) -> None:
    async with make_client(FakeEngine(context=5)) as (http, _):
        r = await http.post("/v1/chat/completions", json=BODY)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("stream", [False, True])
async def test_one_structured_log_line_per_request(
    client: Any, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    import json as _json
    import logging

    http, _ = client
    with caplog.at_level(logging.INFO, logger="hermesd.requests"):
        r = await http.post(
            "/v1/chat/completions", json=dict(BODY, stream=stream), headers={"x-request-id": "trace-1"}
        )
        assert r.status_code == 200
    lines = [_json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "hermesd.requests"]
    assert len(lines) == 1
    line = lines[0]
    assert line["id"] == "trace-1" and line["status"] == 200 and line["model"] == "fake-model"
    assert line["finish"] == "stop" and line["completion_tokens"] > 0 and line["prompt_tokens"] > 0
    assert line["ms"] >= 0 and line["stream"] is stream


@pytest.mark.parametrize(
    ("path", "name", "arch", "layers", "expected"),
    [
        (
            "/m/NousResearch_Hermes-4-14B-Q4_K_M.gguf",
            "Hermes 4 14B",
            "qwen3",
            "40",
            ["hermes-4-14b", "NousResearch_Hermes-4-14B-Q4_K_M"],
        ),
        ("/m/my-own-quant.gguf", "Hermes-4-70B", "llama", "80", ["hermes-4-70b", "my-own-quant"]),
        (
            "/m/Hermes-4-70B-Q6_K-00001-of-00002.gguf",
            "Hermes 4 70B",
            "llama",
            "80",
            ["hermes-4-70b", "Hermes-4-70B-Q6_K"],
        ),
        ("/m/llama-3-8b.gguf", "Llama 3 8B", "llama", "32", ["llama-3-8b"]),
        ("/m/tiny.gguf", "Hermes 4 Tiny", "qwen3", "2", ["tiny"]),
    ],
)
def test_model_ids(path: str, name: str, arch: str, layers: str, expected: list[str]) -> None:
    from hermesd.runtime.engine.protocol import ModelInfo
    from hermesd.server.app import model_ids
    from hermesd.server.settings import Settings

    info = ModelInfo(
        path=path,
        architecture=arch,
        name=name,
        context_length=1,
        train_context_length=1,
        parallel=1,
        bos_token="",
        eos_token="",
        chat_template=None,
        metadata={"general.name": name, "general.architecture": arch, f"{arch}.block_count": layers},
    )
    assert model_ids(Settings(), info) == expected
