"""The think toggle end to end: a real `hermesd serve`, a real tiny model, the official client.

The tiny models were trained to think exactly when the deep-thinking system prompt is in the
prompt, so a passing test means the server really put it there (or left it out) and really split
the model's `<think>` output into `reasoning_content`.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.e2e.server_process import ServerProcess
from tests.fixtures.behaviours import LONG_PROMPT, LONG_REPLY, QUESTIONS, TERSE_SYSTEM
from tests.harness import chat_openai

pytestmark = pytest.mark.e2e

GREEDY: dict[str, Any] = {"temperature": 0}


def client_for(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def model_id(server: ServerProcess) -> str:
    return str(client_for(server).models.list().data[0].id)


THINK_ON: list[dict[str, Any]] = [
    {"think": True},
    {"reasoning_effort": "medium"},
    {"chat_template_kwargs": {"thinking": True}},
    {"chat_template_kwargs": {"enable_thinking": True}},
]
THINK_OFF: list[dict[str, Any]] = [
    {},
    {"think": False},
    {"reasoning_effort": "none"},
    {"chat_template_kwargs": {"thinking": False}},
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("switch", THINK_ON, ids=lambda s: next(iter(s), "default"))
@pytest.mark.parametrize("system", [False, True], ids=["no-system", "system"])
def test_thinking_on_returns_reasoning_separately(
    server: ServerProcess, stream: bool, switch: dict[str, Any], system: bool
) -> None:
    q = QUESTIONS[0]
    messages = ([{"role": "system", "content": TERSE_SYSTEM}] if system else []) + [
        {"role": "user", "content": q.question}
    ]
    result = chat_openai(
        client_for(server), stream, model=model_id(server), messages=messages, extra_body=switch, **GREEDY
    )
    assert result.reasoning == q.reasoning
    assert result.content == q.answer
    assert result.finish_reason == "stop"
    assert "<think>" not in result.content + result.reasoning


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("switch", THINK_OFF, ids=lambda s: next(iter(s), "default"))
def test_thinking_off_answers_directly(server: ServerProcess, stream: bool, switch: dict[str, Any]) -> None:
    for q in QUESTIONS:
        result = chat_openai(
            client_for(server),
            stream,
            model=model_id(server),
            messages=[{"role": "user", "content": q.question}],
            extra_body=switch,
            **GREEDY,
        )
        assert (result.reasoning, result.content) == ("", q.answer)


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_budget_closes_thinking_and_the_model_answers(server: ServerProcess, stream: bool) -> None:
    q = QUESTIONS[1]
    full = chat_openai(
        client_for(server),
        stream,
        model=model_id(server),
        **GREEDY,
        messages=[{"role": "user", "content": q.question}],
        extra_body={"think": True},
    )
    cut = chat_openai(
        client_for(server),
        stream,
        model=model_id(server),
        **GREEDY,
        messages=[{"role": "user", "content": q.question}],
        extra_body={"think": True, "max_reasoning_tokens": 5},
    )
    assert full.usage is not None and cut.usage is not None
    full_reasoning = full.usage["completion_tokens_details"]["reasoning_tokens"]
    assert full_reasoning > 5
    assert cut.usage["completion_tokens_details"]["reasoning_tokens"] == 5
    assert full.reasoning.startswith(cut.reasoning) and len(cut.reasoning) < len(full.reasoning)
    assert cut.content == q.answer


@pytest.mark.parametrize("stream", [False, True])
def test_usage_counts_are_exact(server: ServerProcess, stream: bool) -> None:
    client = client_for(server)
    q = QUESTIONS[2]
    result = chat_openai(
        client, stream, model=model_id(server), **GREEDY, messages=[{"role": "user", "content": q.question}]
    )
    assert result.usage is not None
    # the raw completion of the same rendered prompt, token by token, from /v1/completions
    tok = httpx.post(
        server.base_url + "/v1/completions",
        timeout=30,
        json={"model": model_id(server), "prompt": q.answer, "max_tokens": 1, "temperature": 0},
    ).json()
    assert tok["usage"]["prompt_tokens"] >= 1
    u = result.usage
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert u["completion_tokens"] >= 1 and u["prompt_tokens"] > 10


@pytest.mark.parametrize("stream", [False, True])
def test_max_tokens_gives_length(server: ServerProcess, stream: bool) -> None:
    result = chat_openai(
        client_for(server),
        stream,
        model=model_id(server),
        **GREEDY,
        max_tokens=7,
        messages=[{"role": "user", "content": LONG_PROMPT}],
    )
    assert result.finish_reason == "length"
    assert result.usage is not None and result.usage["completion_tokens"] == 7
    assert LONG_REPLY.startswith(result.content) and result.content


@pytest.mark.parametrize("stream", [False, True])
def test_stop_strings(server: ServerProcess, stream: bool) -> None:
    result = chat_openai(
        client_for(server),
        stream,
        model=model_id(server),
        **GREEDY,
        stop=[" 5 "],
        messages=[{"role": "user", "content": LONG_PROMPT}],
    )
    assert result.content == "1 2 3 4" and result.finish_reason == "stop"


def test_unknown_model_is_404(server: ServerProcess) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client_for(server).chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    assert err.value.body["code"] == "model_not_found"  # type: ignore[index]
