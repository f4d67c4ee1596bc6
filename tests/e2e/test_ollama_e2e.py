"""Ollama's API end to end: a real `hermesd serve`, the tiny models, the `ollama` client unchanged."""

from __future__ import annotations

from typing import Any

import ollama
import pytest

from tests.e2e.server_process import ServerProcess
from tests.fixtures.behaviours import (
    QUESTIONS,
    WEATHER_ARGUMENTS,
    WEATHER_QUESTION,
    WEATHER_TOOL,
)

pytestmark = pytest.mark.e2e

GREEDY = {"temperature": 0}


def client(server: ServerProcess) -> ollama.Client:
    return ollama.Client(host=server.base_url)


def model(server: ServerProcess) -> str:
    return str(client(server).list().models[0].model)


def chat(server: ServerProcess, stream: bool, **kwargs: Any) -> dict[str, Any]:
    """A chat as one message, whole or with the streamed parts joined, plus the last part's fields."""
    c = client(server)
    if not stream:
        r = c.chat(model=model(server), options=GREEDY, **kwargs)
        m = r.message
        return {
            "content": m.content,
            "thinking": m.thinking or "",
            "tool_calls": [(t.function.name, dict(t.function.arguments)) for t in m.tool_calls or ()],
            "last": r,
        }
    content, thinking, calls, last = "", "", [], None
    for part in c.chat(model=model(server), options=GREEDY, stream=True, **kwargs):
        content += part.message.content or ""
        thinking += part.message.thinking or ""
        calls += [(t.function.name, dict(t.function.arguments)) for t in part.message.tool_calls or ()]
        last = part
    assert last is not None and last.done
    return {"content": content, "thinking": thinking, "tool_calls": calls, "last": last}


def test_list_show_ps(server: ServerProcess) -> None:
    c = client(server)
    (listed,) = c.list().models
    assert listed.model is not None and listed.model.endswith(":latest")
    assert listed.details is not None and listed.details.format == "gguf"
    shown = c.show(listed.model)
    assert shown.capabilities is not None and {"completion", "tools", "thinking"} <= set(shown.capabilities)
    assert shown.modelinfo is not None
    arch = shown.modelinfo["general.architecture"]
    assert shown.modelinfo[f"{arch}.context_length"] > 0
    assert shown.modelinfo["general.parameter_count"] > 0 and listed.details.parameter_size
    assert shown.parameters is not None
    num_ctx = dict(line.split(None, 1) for line in shown.parameters.splitlines())["num_ctx"]
    (running,) = c.ps().models
    assert running.model == listed.model
    assert running.context_length == int(num_ctx) == 2048  # --ctx: the context per sequence


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("think", [False, True])
def test_chat_answers_with_thinking_in_message_thinking(
    server: ServerProcess, stream: bool, think: bool
) -> None:
    q = QUESTIONS[0]
    r = chat(server, stream, messages=[{"role": "user", "content": q.question}], think=think)
    assert r["content"] == q.answer
    assert r["thinking"] == (q.reasoning if think else "")
    last = r["last"]
    assert last.done_reason == "stop"
    assert last.prompt_eval_count > 0 and last.eval_count > 0 and last.total_duration > 0


@pytest.mark.parametrize("stream", [False, True])
def test_chat_with_tools_gets_a_tool_call(server: ServerProcess, stream: bool) -> None:
    # Without think: the client rewrites the tool's schema with `required` before `properties`
    # (tests/fixtures/behaviours.py trains the tiny models on that form without thinking only).
    r = chat(server, stream, messages=[{"role": "user", "content": WEATHER_QUESTION}], tools=[WEATHER_TOOL])
    assert r["tool_calls"] == [("get_weather", WEATHER_ARGUMENTS)]
    assert r["content"] == "" and r["thinking"] == ""
    assert r["last"].done_reason == "stop"


@pytest.mark.parametrize("stream", [False, True])
def test_generate(server: ServerProcess, stream: bool) -> None:
    q = QUESTIONS[1]
    c = client(server)
    if stream:
        parts = list(c.generate(model=model(server), prompt=q.question, options=GREEDY, stream=True))
        text = "".join(p.response or "" for p in parts)
        last = parts[-1]
    else:
        last = c.generate(model=model(server), prompt=q.question, options=GREEDY)
        text = last.response or ""
    assert text == q.answer
    assert last.done and last.done_reason == "stop" and last.eval_count > 0


def test_errors_reach_the_client_as_response_errors(server: ServerProcess) -> None:
    c = client(server)
    with pytest.raises(ollama.ResponseError) as err:
        c.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 404 and "no-such-model" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        c.chat(
            model=model(server), messages=[{"role": "user", "content": "hi"}], options={"num_ctx": 1 << 20}
        )
    assert err.value.status_code == 400 and "num_ctx" in err.value.error
