"""The Anthropic Messages API end to end: a real `hermesd serve`, real tiny models, and the real
`anthropic` client, unchanged, with `base_url` at hermesd. Every reply is asked for whole
(`messages.create`) and streamed (`messages.stream`), and the two must agree."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest

from tests.e2e.server_process import ServerProcess
from tests.fixtures.behaviours import (
    LONG_PROMPT,
    QUESTIONS,
    TERSE_SYSTEM,
    WEATHER_ANSWER,
    WEATHER_ARGUMENTS,
    WEATHER_QUESTION,
    WEATHER_REASONING,
    WEATHER_RESULT,
    WEATHER_TOOL,
)

pytestmark = pytest.mark.e2e

TOOL = {
    "name": WEATHER_TOOL["function"]["name"],
    "description": WEATHER_TOOL["function"]["description"],
    "input_schema": WEATHER_TOOL["function"]["parameters"],
}


# The SDK no longer sends sampling fields; hermesd still reads `temperature` for greedy tests
GREEDY = {"temperature": 0}


def client(server: ServerProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key="unused", max_retries=0)


def model(server: ServerProcess) -> str:
    return str(httpx.get(server.base_url + "/v1/models", timeout=10).json()["data"][0]["id"])


def ask(server: ServerProcess, **kwargs: Any) -> dict[str, Any]:
    """The reply from `messages.create` and from `messages.stream`, checked equal (but for ids)."""
    kwargs = {"model": model(server), "max_tokens": 400, "extra_body": GREEDY, **kwargs}
    c = client(server)
    whole = c.messages.create(**kwargs).model_dump(exclude_none=True)
    with c.messages.stream(**kwargs) as s:
        kinds = {event.type for event in s}
        streamed = s.get_final_message().model_dump(exclude_none=True)
    assert {"message_start", "content_block_start", "content_block_delta", "message_stop"} <= kinds

    def same(m: dict[str, Any]) -> dict[str, Any]:
        blocks = [{k: v for k, v in b.items() if k != "id"} for b in m["content"]]
        return {k: v for k, v in m.items() if k != "id"} | {"content": blocks}

    assert same(whole) == same(streamed)
    return whole


def test_create_and_stream_answer(server: ServerProcess) -> None:
    q = QUESTIONS[0]
    m = ask(server, system=TERSE_SYSTEM, messages=[{"role": "user", "content": q.question}])
    assert m["content"] == [{"type": "text", "text": q.answer}]
    assert m["stop_reason"] == "end_turn" and m["usage"]["output_tokens"] > 0


def test_thinking_enabled_comes_back_as_a_thinking_block(server: ServerProcess) -> None:
    q = QUESTIONS[0]
    m = ask(
        server,
        thinking={"type": "enabled", "budget_tokens": 300},
        messages=[{"role": "user", "content": q.question}],
    )
    thinking, text = m["content"]
    assert thinking["type"] == "thinking" and thinking["thinking"] == q.reasoning and thinking["signature"]
    assert text == {"type": "text", "text": q.answer}
    # the thinking block goes back with its signature in the next turn, as Claude Code sends it
    follow = [
        {"role": "user", "content": q.question},
        {"role": "assistant", "content": m["content"]},
        {"role": "user", "content": QUESTIONS[1].question},
    ]
    again = ask(server, thinking={"type": "disabled"}, messages=follow)
    assert again["content"][0]["type"] == "text"


def test_stop_reasons_max_tokens_and_stop_sequence(server: ServerProcess) -> None:
    m = ask(server, max_tokens=5, messages=[{"role": "user", "content": LONG_PROMPT}])
    assert m["stop_reason"] == "max_tokens" and m["usage"]["output_tokens"] == 5
    q = QUESTIONS[0]
    m = ask(server, stop_sequences=["Paris"], messages=[{"role": "user", "content": q.question}])
    assert m["stop_reason"] == "stop_sequence" and m["stop_sequence"] == "Paris"
    assert m["content"] == [{"type": "text", "text": q.answer.split("Paris")[0]}]


@pytest.mark.parametrize("think", [False, True])
def test_tool_use_round_trip(server: ServerProcess, think: bool) -> None:
    thinking = {"type": "enabled", "budget_tokens": 300} if think else {"type": "disabled"}
    history: list[dict[str, Any]] = [{"role": "user", "content": WEATHER_QUESTION}]
    m = ask(server, tools=[TOOL], thinking=thinking, messages=history)
    assert m["stop_reason"] == "tool_use"
    use = m["content"][-1]
    assert use["type"] == "tool_use" and use["name"] == "get_weather" and use["input"] == WEATHER_ARGUMENTS
    if think:
        assert m["content"][0]["thinking"] == WEATHER_REASONING
    # the call goes back without its reasoning (what the tiny model was trained on), then its result
    history += [
        {"role": "assistant", "content": [use]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use["id"], "content": WEATHER_RESULT}],
        },
    ]
    final = ask(server, tools=[TOOL], thinking={"type": "disabled"}, messages=history)
    assert final["content"] == [{"type": "text", "text": WEATHER_ANSWER}]
    assert final["stop_reason"] == "end_turn"


@pytest.mark.parametrize("think", [False, True])
def test_count_tokens_equals_usage_input_tokens(server: ServerProcess, think: bool) -> None:
    kwargs: dict[str, Any] = {
        "model": model(server),
        "system": TERSE_SYSTEM,
        "tools": [TOOL],
        "messages": [{"role": "user", "content": WEATHER_QUESTION}],
        "thinking": {"type": "enabled", "budget_tokens": 300} if think else {"type": "disabled"},
    }
    c = client(server)
    counted = c.messages.count_tokens(**kwargs).input_tokens
    reply = c.messages.create(max_tokens=400, extra_body=GREEDY, **kwargs)
    assert counted == reply.usage.input_tokens > 0
    with c.messages.stream(max_tokens=400, extra_body=GREEDY, **kwargs) as s:
        assert s.get_final_message().usage.input_tokens == counted


def test_errors_have_anthropic_shape(server: ServerProcess) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        client(server).messages.create(
            model="claude-no-such-model", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.body["type"] == "error"  # type: ignore[index]
    r = httpx.post(
        server.base_url + "/v1/messages", json={"model": model(server), "messages": []}, timeout=10
    )
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert json.dumps(body).count("max_tokens") or json.dumps(body).count("messages")
