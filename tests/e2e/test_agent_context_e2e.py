"""Issue 16 parts 1, 4 and 6 against a real `hermesd serve` with the official `openai` client: the
context an agent discovers, max_tokens beyond the context ending in "length", the overflow error
agents parse, a `claude-*` alias, and the reasoning in both fields."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.server_process import ServerProcess, hermesd_cmd, run_server
from tests.fixtures.behaviours import LONG_PROMPT, QUESTIONS
from tests.fixtures.tiny_models import tiny_model
from tests.harness import chat_openai

pytestmark = pytest.mark.e2e

CTX = 1024  # the tiny model was trained for 4096; a small context keeps the "length" test short


@pytest.fixture(scope="module")
def agent_server(e2e_tmp: Path) -> Iterator[ServerProcess]:
    flags = ("--parallel", "2", "--ctx", str(CTX), "--min-ctx", str(CTX), "--reasoning-field", "both")
    aliases = ("--model-alias", "claude-*=tiny-qwen3", "--served-model-name", "tiny-qwen3")
    with run_server(tiny_model("qwen3"), e2e_tmp, *flags, *aliases) as server:
        yield server


def client_for(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def test_models_and_props_carry_the_served_context(agent_server: ServerProcess) -> None:
    client = client_for(agent_server)
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny-qwen3"]  # concrete ids only, no alias
    entry = models[0].model_dump()
    assert entry["context_length"] == entry["max_model_len"] == CTX
    meta = entry["meta"]
    assert meta["n_ctx"] == CTX and meta["n_ctx_train"] == 4096
    assert meta["n_params"] > 0 and meta["size"] > 0
    assert client.models.retrieve("claude-sonnet-4-5").id == "tiny-qwen3"
    for path in ("/v1/props", "/props"):
        props = httpx.get(agent_server.base_url + path, timeout=10).json()
        assert props["default_generation_settings"]["n_ctx"] == CTX
        assert props["total_slots"] == 2
        assert props["model_path"] == tiny_model("qwen3").name


@pytest.mark.parametrize("stream", [False, True])
def test_max_tokens_beyond_the_context_ends_in_length(agent_server: ServerProcess, stream: bool) -> None:
    # Hermes Agent sends max_tokens equal to the context it found; generation ends with the context
    result = chat_openai(
        client_for(agent_server),
        stream,
        model="tiny-qwen3",
        messages=[{"role": "user", "content": LONG_PROMPT}],
        max_tokens=65536,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert result.finish_reason == "length"
    assert result.usage is not None
    assert result.usage["prompt_tokens"] + result.usage["completion_tokens"] == CTX


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_beyond_the_context_states_the_limit(agent_server: ServerProcess, stream: bool) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(agent_server).chat.completions.create(
            model="tiny-qwen3",
            messages=[{"role": "user", "content": "word " * 3000}],
            stream=stream,
        )
    err: Any = caught.value.body
    assert caught.value.code == "context_length_exceeded"
    assert f"maximum context length is {CTX} tokens; the request has " in err["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_an_alias_and_both_reasoning_fields(agent_server: ServerProcess, stream: bool) -> None:
    q = QUESTIONS[0]
    client = client_for(agent_server)
    kwargs: dict[str, Any] = dict(
        model="claude-sonnet-4-5",
        messages=[{"role": "user", "content": q.question}],
        temperature=0,
        extra_body={"reasoning_effort": "high"},
    )
    result = chat_openai(client, stream, **kwargs)
    assert result.reasoning == q.reasoning
    assert result.content == q.answer
    # the same text under `reasoning`, for the clients that read that name
    if stream:
        text = "".join(
            getattr(c.choices[0].delta, "reasoning", None) or ""
            for c in client.chat.completions.create(stream=True, **kwargs)
            if c.choices
        )
    else:
        resp = client.chat.completions.create(stream=False, **kwargs)
        assert resp.model == "tiny-qwen3"
        text = getattr(resp.choices[0].message, "reasoning", "")
    assert text == q.reasoning


def test_min_ctx_beyond_the_trained_context_is_refused(e2e_tmp: Path) -> None:
    model = tiny_model("qwen3")
    cmd = hermesd_cmd("serve", "--model", str(model), "--min-ctx", "8192", "--state-dir", str(e2e_tmp / "s"))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "trained for at most 4096 tokens" in done.stderr
