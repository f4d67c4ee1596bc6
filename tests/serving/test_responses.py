"""POST /v1/responses over a scripted engine: input items, output items, the event sequence, the
store, errors. Every behaviour runs streamed and whole, and both must give the same response."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from hermesd.server.response_store import ResponseStore
from tests.harness import parse_sse
from tests.serving.fake_engine import FakeEngine

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def _without_ids(response: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(response))
    for key in ("id", "created_at"):
        out.pop(key, None)
    for item in out["output"]:
        item.pop("id", None)
        item.pop("call_id", None)
    return out


def _check_stream(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Check the event sequence against itself and return the final response, rebuilt from the
    deltas (so the test sees what an accumulating client sees)."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    types = [e["type"] for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] in ("response.completed", "response.incomplete")
    final = events[-1]["response"]
    built: dict[int, str] = {}
    for e in events:
        if e["type"] in ("response.output_text.delta", "response.reasoning_text.delta"):
            built[e["output_index"]] = built.get(e["output_index"], "") + e["delta"]
        if e["type"] == "response.function_call_arguments.delta":
            built[e["output_index"]] = built.get(e["output_index"], "") + e["delta"]
        if e["type"] == "response.output_item.done":
            assert final["output"][e["output_index"]] == e["item"]
    for index, text in built.items():
        item = final["output"][index]
        assert (
            item.get("arguments") if item["type"] == "function_call" else item["content"][0]["text"]
        ) == text
    return dict(final)


async def respond(client: httpx.AsyncClient, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    r = await client.post("/v1/responses", json={"model": "fake-model", **body, "stream": stream})
    assert r.status_code == 200, r.text
    if not stream:
        return dict(r.json())
    assert "event: response.created" in r.text and "[DONE]" not in r.text
    return _check_stream([e for e in parse_sse(r.text)])


async def both(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    whole = await respond(client, body, False)
    streamed = await respond(client, body, True)
    assert _without_ids(whole) == _without_ids(streamed)
    return whole


def _kinds(response: dict[str, Any]) -> list[str]:
    return [item["type"] for item in response["output"]]


async def test_text_input_gives_one_message(make_client: Any) -> None:
    async with make_client(FakeEngine(reply="Paris.")) as (client, engine):
        r = await both(client, {"input": "Capital of France?", "instructions": "Be terse."})
    assert r["object"] == "response" and r["status"] == "completed" and r["id"].startswith("resp_")
    assert _kinds(r) == ["message"]
    assert r["output"][0]["content"][0] == {
        "type": "output_text",
        "text": "Paris.",
        "annotations": [],
        "logprobs": [],
    }
    assert "Be terse." in engine.requests[0].prompt and "Capital of France?" in engine.requests[0].prompt
    usage = r["usage"]
    assert usage["output_tokens"] > 0 and usage["output_tokens_details"] == {"reasoning_tokens": 0}
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


@pytest.mark.parametrize("chunk", [1, 5])
async def test_reasoning_effort_turns_thinking_on_and_gives_a_reasoning_item(
    make_client: Any, chunk: int
) -> None:
    reply = "<think>\nFrance is in Europe.\n</think>\nParis."
    async with make_client(FakeEngine(reply=reply, chunk=chunk)) as (client, engine):
        r = await both(client, {"input": "Capital?", "reasoning": {"effort": "high"}})
        off = await respond(client, {"input": "Capital?", "reasoning": {"effort": "none"}}, False)
    assert _kinds(r) == ["reasoning", "message"]
    assert r["output"][0]["content"] == [{"type": "reasoning_text", "text": "France is in Europe."}]
    assert r["output"][1]["content"][0]["text"] == "Paris."
    assert engine.requests[0].reasoning.thinking and not engine.requests[-1].reasoning.thinking
    assert off["reasoning"]["effort"] == "none"


async def test_function_call_round_trip_with_items(make_client: Any) -> None:
    async with make_client(FakeEngine(reply=CALL)) as (client, engine):
        r = await both(client, {"input": "Weather in Paris?", "tools": [WEATHER]})
        assert _kinds(r) == ["function_call"]
        call = r["output"][0]
        assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}
        assert call["call_id"].startswith("call_") and call["status"] == "completed"
        engine.reply = "It is sunny."
        items = [
            {"role": "user", "content": "Weather in Paris?"},
            call,
            {"type": "function_call_output", "call_id": call["call_id"], "output": '{"forecast": "sunny"}'},
        ]
        again = await both(client, {"input": items, "tools": [WEATHER]})
    assert again["output"][0]["content"][0]["text"] == "It is sunny."
    prompt = engine.requests[-1].prompt
    assert '"forecast": "sunny"' in prompt and "get_weather" in prompt


async def test_previous_response_id_continues_the_conversation(make_client: Any) -> None:
    async with make_client(FakeEngine(reply="Paris.")) as (client, engine):
        first = await respond(client, {"input": "Capital of France?", "instructions": "SYS-ONE"}, False)
        engine.reply = "About 2 million."
        second = await respond(
            client, {"input": "Its population?", "previous_response_id": first["id"]}, True
        )
        assert second["previous_response_id"] == first["id"]
        prompt = engine.requests[-1].prompt
        assert "Capital of France?" in prompt and "Paris." in prompt and "Its population?" in prompt
        assert "SYS-ONE" not in prompt  # instructions are not carried over, as in OpenAI's API
        got = await client.get(f"/v1/responses/{second['id']}")
        assert got.status_code == 200 and got.json() == second
        gone = await client.delete(f"/v1/responses/{first['id']}")
        assert gone.json() == {"id": first["id"], "object": "response", "deleted": True}
        missing = await client.get(f"/v1/responses/{first['id']}")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        bad = await client.post(
            "/v1/responses", json={"model": "fake-model", "input": "x", "previous_response_id": first["id"]}
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "previous_response_id"
        unstored = await respond(client, {"input": "x", "store": False}, False)
        assert (await client.get(f"/v1/responses/{unstored['id']}")).status_code == 404


async def test_stored_responses_are_per_api_key(make_client: Any) -> None:
    async with make_client(api_key=["key-a", "key-b"]) as (client, _):
        a = {"authorization": "Bearer key-a"}
        r = await client.post("/v1/responses", json={"model": "fake-model", "input": "hi"}, headers=a)
        rid = r.json()["id"]
        assert (await client.get(f"/v1/responses/{rid}", headers=a)).status_code == 200
        other = await client.get(f"/v1/responses/{rid}", headers={"authorization": "Bearer key-b"})
        assert other.status_code == 404


def test_store_is_bounded_in_count_and_bytes() -> None:
    store = ResponseStore(max_count=2, max_bytes=2000)
    for i in range(3):
        assert store.put("k", {"id": f"r{i}"}, [{"role": "user", "content": "x" * 100}])
    assert store.get("k", "r0") is None and store.get("k", "r2") is not None
    assert not store.put("k", {"id": "big"}, [{"role": "user", "content": "x" * 5000}])
    assert store.put("k", {"id": "r3"}, [{"role": "user", "content": "x" * 1900}])
    assert store.get("k", "r2") is None and store.get("k", "r3") is not None
    assert store.get("other", "r3") is None


async def test_json_schema_format_becomes_a_grammar_after_think(make_client: Any) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    fmt = {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}
    async with make_client(FakeEngine(reply='{"a": 1}')) as (client, engine):
        r = await both(client, {"input": "x", "text": {"format": fmt}, "reasoning": {"effort": "low"}})
    assert r["text"]["format"] == fmt
    gen = engine.requests[0]
    assert gen.grammar is not None and gen.grammar_trigger == "</think>"


async def test_sampling_and_limits_reach_the_engine(make_client: Any) -> None:
    async with make_client(FakeEngine(reply="a b c d e f", chunk=1)) as (client, engine):
        await both(client, {"input": "x", "max_output_tokens": 3, "temperature": 0.1, "top_p": 0.5})
    gen = engine.requests[0]
    assert gen.max_tokens == 3 and gen.sampling.temperature == 0.1 and gen.sampling.top_p == 0.5


async def test_length_finish_is_incomplete(make_client: Any) -> None:
    async with make_client(FakeEngine(reply="a b c", finish_reason="length")) as (client, _):
        r = await both(client, {"input": "x"})
    assert r["status"] == "incomplete" and r["incomplete_details"] == {"reason": "max_output_tokens"}


async def test_hosted_tools_are_left_out_and_function_tools_kept(make_client: Any) -> None:
    # what Codex sends along with its function tools on every request
    hosted = [{"type": "web_search"}, {"type": "namespace", "name": "mcp", "tools": []}, {"type": "custom"}]
    async with make_client(FakeEngine(reply=CALL)) as (client, engine):
        r = await both(client, {"input": "x", "tools": [*hosted, WEATHER]})
    assert _kinds(r) == ["function_call"]
    assert "get_weather" in engine.requests[0].prompt and "web_search" not in engine.requests[0].prompt


async def test_tool_choice_named_and_required_force_a_call(make_client: Any) -> None:
    async with make_client(FakeEngine(reply=CALL)) as (client, engine):
        await respond(client, {"input": "x", "tools": [WEATHER], "tool_choice": "required"}, False)
        named = {"type": "function", "name": "get_weather"}
        await respond(client, {"input": "x", "tools": [WEATHER], "tool_choice": named}, False)
    assert all(g.grammar is not None for g in engine.requests)


BAD = [
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    (
        {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
        "input[0].content[0]",
    ),
    ({"input": "x", "temperature": 9}, "temperature"),
    ({"input": "x", "reasoning": {"effort": "lots"}}, "reasoning.effort"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format.schema"),
    ({"input": "x", "tool_choice": {"type": "function", "name": "nope"}, "tools": [WEATHER]}, "tool_choice"),
    ({"input": "x", "background": True}, "background"),
    ({"input": "\ud800"}, "input"),
    ({"input": []}, "input"),
]


@pytest.mark.parametrize(("body", "param"), BAD)
async def test_bad_requests_get_openai_errors_naming_the_field(
    client: tuple[httpx.AsyncClient, FakeEngine], body: dict[str, Any], param: str
) -> None:
    http, _ = client
    payload = json.dumps({"model": "fake-model", **body})
    r = await http.post("/v1/responses", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error


async def test_an_engine_error_mid_stream_ends_with_response_failed(make_client: Any) -> None:
    async with make_client(FakeEngine(reply="partial", error="boom")) as (client, _):
        r = await client.post("/v1/responses", json={"model": "fake-model", "input": "x", "stream": True})
        whole = await client.post("/v1/responses", json={"model": "fake-model", "input": "x"})
    events = parse_sse(r.text)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1]["response"]["status"] == "failed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert whole.status_code == 500 and whole.json()["error"]["type"] == "server_error"
