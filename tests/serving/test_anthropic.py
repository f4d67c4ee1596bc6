"""The Anthropic Messages API over a scripted engine, driven by the real `anthropic` client.

Each behaviour runs streamed and whole; the two must give the same message.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import httpx2
import pytest

from hermesd.models.formats.hermes import THINKING_PROMPT
from hermesd.runtime.engine.protocol import FinishEvent, GenerationRequest
from hermesd.server.serving_anthropic import signature
from tests.serving.fake_engine import FakeEngine, FakeStream

ASK = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = {
    "name": "get_weather",
    "description": "Get the weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def sdk(http: httpx.AsyncClient, api_key: str = "unused") -> anthropic.AsyncAnthropic:
    """The real client on the same in-process app (it speaks through httpx2, httpx's successor)."""
    app = http._transport.app  # type: ignore[attr-defined]
    transport = httpx2.ASGITransport(app=app)
    return anthropic.AsyncAnthropic(
        base_url=str(http.base_url),
        api_key=api_key,
        http_client=httpx2.AsyncClient(transport=transport, base_url=str(http.base_url)),
        max_retries=0,
    )


async def create(http: httpx.AsyncClient, stream: bool, **kwargs: Any) -> dict[str, Any]:
    """The reply as a dict, from `messages.create` or from `messages.stream`'s final message."""
    kwargs = {"model": "fake-model", "max_tokens": 100, "messages": ASK, **kwargs}
    client = sdk(http)
    if stream:
        async with client.messages.stream(**kwargs) as s:
            async for _ in s:
                pass
            return (await s.get_final_message()).model_dump(exclude_none=True)
    return (await client.messages.create(**kwargs)).model_dump(exclude_none=True)


async def both(http: httpx.AsyncClient, **kwargs: Any) -> dict[str, Any]:
    whole, streamed = await create(http, False, **kwargs), await create(http, True, **kwargs)

    def same(m: dict[str, Any]) -> dict[str, Any]:  # ids are made up per reply
        blocks = [{k: v for k, v in b.items() if k != "id"} for b in m["content"]]
        return {k: v for k, v in m.items() if k != "id"} | {"content": blocks}

    assert same(whole) == same(streamed)
    return streamed


async def test_text_reply_streamed_and_whole_agree(make_client: Any) -> None:
    async with make_client(FakeEngine(reply="Paris.")) as (http, engine):
        m = await both(http, system="You are terse.")
    assert m["type"] == "message" and m["role"] == "assistant" and m["model"] == "fake-model"
    assert m["content"] == [{"type": "text", "text": "Paris."}]
    assert m["stop_reason"] == "end_turn"
    assert m["usage"]["input_tokens"] == engine.count_tokens(engine.requests[0].prompt)
    assert m["usage"]["output_tokens"] == 2
    assert "You are terse." in engine.requests[0].prompt


@pytest.mark.parametrize("chunk", [1, 5])
async def test_thinking_enabled_gives_a_thinking_block_with_budget(make_client: Any, chunk: int) -> None:
    reply = "<think>\nFrance is in Europe.\n</think>\nParis."
    async with make_client(FakeEngine(reply=reply, chunk=chunk)) as (http, engine):
        m = await both(http, thinking={"type": "enabled", "budget_tokens": 64})
    thinking = "France is in Europe."
    assert m["content"] == [
        {"type": "thinking", "thinking": thinking, "signature": signature(thinking)},
        {"type": "text", "text": "Paris."},
    ]
    gen = engine.requests[0]
    assert gen.reasoning.thinking and gen.reasoning.budget == 64
    assert THINKING_PROMPT in gen.prompt


SWITCHES: list[tuple[dict[str, Any], bool, int | None]] = [
    # (request fields, reasoning on, budget)
    ({"thinking": {"type": "adaptive"}}, True, None),
    ({"thinking": {"type": "between_tools"}}, True, None),
    ({"thinking": {"type": "enabled", "budget_tokens": 64}, "output_config": {"effort": "low"}}, True, 64),
    ({"thinking": {"type": "disabled"}, "output_config": {"effort": "high"}}, False, None),
]


@pytest.mark.parametrize(("fields", "on", "budget"), SWITCHES)
async def test_thinking_types_and_effort(
    make_client: Any, fields: dict[str, Any], on: bool, budget: int | None
) -> None:
    async with make_client() as (http, engine):
        await create(http, False, **fields)
    assert engine.requests[0].reasoning.thinking == on
    if on:
        assert engine.requests[0].reasoning.budget == budget


async def test_effort_turns_reasoning_on(make_client: Any) -> None:
    async with make_client() as (http, engine):
        await create(http, False, output_config={"effort": "high"})
    assert engine.requests[0].reasoning.thinking


async def test_thinking_disabled_turns_reasoning_off(make_client: Any) -> None:
    async with make_client(think=True) as (http, engine):
        await create(http, False, thinking={"type": "disabled"})
        await create(http, False)
    assert not engine.requests[0].reasoning.thinking
    assert engine.requests[1].reasoning.thinking  # the server's default when the request says nothing


@pytest.mark.parametrize("chunk", [2, 50])
async def test_tool_use_round_trip(make_client: Any, chunk: int) -> None:
    async with make_client(FakeEngine(reply=CALL, chunk=chunk)) as (http, engine):
        m = await both(http, tools=[WEATHER])
        assert m["stop_reason"] == "tool_use"
        [use] = m["content"]
        assert (
            use["type"] == "tool_use" and use["name"] == "get_weather" and use["input"] == {"city": "Paris"}
        )
        engine.reply = "It is sunny."
        history = [
            *ASK,
            {"role": "assistant", "content": m["content"]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use["id"], "content": '{"forecast": "sunny"}'}
                ],
            },
        ]
        final = await both(http, tools=[WEATHER], messages=history)
    assert final["content"] == [{"type": "text", "text": "It is sunny."}]
    prompt = engine.requests[-1].prompt
    assert '{"forecast": "sunny"}' in prompt and '"city": "Paris"' in prompt


async def test_server_tools_are_left_out(make_client: Any) -> None:
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
    async with make_client() as (http, engine):
        await create(http, False, tools=[WEATHER, search])
    assert "get_weather" in engine.requests[0].prompt and "web_search" not in engine.requests[0].prompt


async def test_claude_names_reach_the_model_through_an_alias(make_client: Any) -> None:
    async with make_client(model_alias=["claude-*=fake-model"]) as (http, _):
        m = await both(http, model="claude-sonnet-4-5")
        counted = await sdk(http).messages.count_tokens(model="claude-haiku-4-5", messages=ASK)
    assert m["content"] == [{"type": "text", "text": "Hello there."}]
    assert counted.input_tokens == m["usage"]["input_tokens"]


CHOICES: list[tuple[dict[str, Any], str | None, bool]] = [
    # (tool_choice, expected grammar's named tool or None, whether a grammar forces a call)
    ({"type": "auto"}, None, False),
    ({"type": "any"}, None, True),
    ({"type": "tool", "name": "get_weather"}, "get_weather", True),
    ({"type": "none"}, None, False),
]


@pytest.mark.parametrize(("choice", "name", "forced"), CHOICES)
async def test_tool_choice_maps_to_the_chat_grammar(
    make_client: Any, choice: dict[str, Any], name: str | None, forced: bool
) -> None:
    async with make_client() as (http, engine):
        await create(http, False, tools=[WEATHER], tool_choice=choice)
    gen = engine.requests[0]
    assert (gen.grammar is not None) == forced
    assert ("get_weather" in gen.prompt) == (choice["type"] != "none")


async def test_max_tokens_and_stop_sequence_reasons(make_client: Any) -> None:
    class StopEngine(FakeEngine):
        async def submit(self, request: GenerationRequest) -> FakeStream:
            stream = await super().submit(request)
            end = stream.events[-1]
            assert isinstance(end, FinishEvent)
            stream.events[-1] = FinishEvent(end.reason, end.usage, stop_sequence=request.stop[0])
            return stream

    async with make_client(FakeEngine(reply="one two three", finish_reason="length")) as (http, _):
        m = await both(http, max_tokens=2)
    assert m["stop_reason"] == "max_tokens"
    async with make_client(StopEngine()) as (http, engine):
        m = await both(http, stop_sequences=["END"])
    assert m["stop_reason"] == "stop_sequence" and m["stop_sequence"] == "END"
    assert engine.requests[0].stop == ("END",)


async def test_count_tokens_equals_usage_input_tokens(make_client: Any) -> None:
    kwargs: dict[str, Any] = {
        "model": "fake-model",
        "messages": ASK,
        "system": [{"type": "text", "text": "You are terse."}],
        "tools": [WEATHER],
        "thinking": {"type": "enabled", "budget_tokens": 32},
    }
    async with make_client() as (http, _):
        client = sdk(http)
        counted = await client.messages.count_tokens(**kwargs)
        m = await client.messages.create(max_tokens=50, **kwargs)
    assert counted.input_tokens == m.usage.input_tokens > 0


async def raw_events(http: httpx.AsyncClient, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    r = await http.post("/v1/messages", json=body)
    assert r.status_code == 200, r.text
    out, name = [], ""
    for line in r.text.splitlines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            assert data["type"] == name
            out.append((name, data))
    return out


async def test_stream_event_sequence(make_client: Any) -> None:
    reply = "<think>hm</think>Paris." + CALL
    body = {"model": "fake-model", "max_tokens": 99, "stream": True, "messages": ASK, "tools": [WEATHER]}
    async with make_client(FakeEngine(reply=reply)) as (http, _):
        events = await raw_events(http, body)
    names = [n for n, _ in events]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["thinking", "text", "tool_use"]
    deltas = {d["delta"]["type"] for n, d in events if n == "content_block_delta"}
    assert deltas == {"thinking_delta", "signature_delta", "text_delta", "input_json_delta"}
    assert names.count("content_block_stop") == 3
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_error_mid_stream_is_an_error_event(make_client: Any) -> None:
    body = {"model": "fake-model", "max_tokens": 99, "stream": True, "messages": ASK}
    async with make_client(FakeEngine(error="decode failed")) as (http, _):
        events = await raw_events(http, body)
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": "decode failed"}},
    )


BAD: list[tuple[dict[str, Any], str]] = [
    ({"model": "fake-model", "messages": ASK}, "max_tokens"),  # required
    ({"model": "fake-model", "max_tokens": 5, "messages": []}, "messages"),
    ({"model": "fake-model", "max_tokens": 5, "messages": ASK, "temperature": 9}, "temperature"),
    (
        {
            "model": "fake-model",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": [{"type": "image"}]}],
        },
        "messages",
    ),
    (
        {"model": "fake-model", "max_tokens": 5, "messages": [{"role": "user", "content": "\ud800"}]},
        "surrogate",
    ),
    (
        {"model": "fake-model", "max_tokens": 5, "messages": ASK, "tool_choice": {"type": "any"}},
        "tool_choice",
    ),
]


@pytest.mark.parametrize(("body", "mentions"), BAD)
async def test_bad_requests_get_anthropic_errors(client: Any, body: dict[str, Any], mentions: str) -> None:
    http, _ = client
    # json.dumps writes a lone surrogate as its \ud800 escape, as a client in another language might
    r = await http.post(
        "/v1/messages", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    err = r.json()
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert mentions in err["error"]["message"]


async def test_unknown_model_is_a_not_found_error(client: Any) -> None:
    http, _ = client
    with pytest.raises(anthropic.NotFoundError) as info:
        await create(http, False, model="claude-sonnet-4-5")
    assert info.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


async def test_x_api_key_and_anthropic_version_headers(make_client: Any) -> None:
    async with make_client(api_key=["sekrit"]) as (http, _):
        r = await http.post(
            "/v1/messages/count_tokens",
            json={"model": "fake-model", "messages": ASK},
            headers={"x-api-key": "sekrit", "anthropic-version": "2023-06-01"},
        )
        assert r.status_code == 200 and r.json()["input_tokens"] > 0
        with pytest.raises(anthropic.AuthenticationError) as info:
            await sdk(http, api_key="wrong").messages.create(model="fake-model", max_tokens=5, messages=ASK)
        assert info.value.body == {  # type: ignore[comparison-overlap]
            "type": "error",
            "error": {"type": "authentication_error", "message": info.value.body["error"]["message"]},  # type: ignore[index]
        }
        r = await http.post("/v1/chat/completions", json={"model": "x", "messages": ASK})
        assert "error" in r.json() and "type" not in r.json()  # other routes keep OpenAI's shape
