"""Speculative decoding through the HTTP API (issue 17): a `hermesd serve --ngram-lookup` answers
exactly what the same server without it answers, streamed and whole, with reasoning, a JSON schema
and stop strings, and /metrics counts what it drafted and kept."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.server_process import ServerProcess, run_server
from tests.fixtures.behaviours import QUESTIONS
from tests.fixtures.tiny_models import tiny_model
from tests.harness import chat_openai

pytestmark = pytest.mark.e2e

FLAGS = ("--parallel", "4", "--ctx", "2048")  # as the plain `server` fixture runs


@pytest.fixture(scope="module")
def spec_servers(e2e_tmp: Path) -> Iterator[dict[str, ServerProcess]]:
    with (
        run_server(tiny_model("qwen3"), e2e_tmp, *FLAGS, "--ngram-lookup") as qwen3,
        run_server(tiny_model("llama"), e2e_tmp, *FLAGS, "--ngram-lookup") as llama,
    ):
        yield {"qwen3": qwen3, "llama": llama}


def client_for(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def spec_counters(server: ServerProcess) -> tuple[float, float]:
    text = httpx.get(server.base_url + "/metrics", timeout=10).text

    def value(name: str) -> float:
        m = re.search(rf'^{name}_total{{source="ngram"}} (\S+)$', text, re.M)
        return float(m.group(1)) if m else 0.0

    return value("hermesd_spec_drafted_tokens"), value("hermesd_spec_accepted_tokens")


# Past their short answers (ignore_eos, as llama-server takes it) the tiny models repeat what they
# have written: the text n-gram lookup predicts.
QUESTION = [{"role": "user", "content": QUESTIONS[0].question}]
CASES: dict[str, dict[str, Any]] = {
    "repeat": {"messages": QUESTION, "max_tokens": 200, "ignore_eos": True},
    "think": {"messages": QUESTION, "max_tokens": 200, "ignore_eos": True, "reasoning_effort": "medium"},
    "json": {
        "messages": [{"role": "user", "content": "Give me a person as JSON. " * 3}],
        "max_tokens": 120,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "person",
                "schema": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["name", "tags"],
                },
            },
        },
    },
    "stop": {"messages": QUESTION, "max_tokens": 200, "ignore_eos": True, "stop": ["Paris. F"]},
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_answers_match_the_server_without_speculation(
    server: ServerProcess, kind: str, spec_servers: dict[str, ServerProcess], case: str, stream: bool
) -> None:
    spec = spec_servers[kind]
    before = spec_counters(spec)
    body: dict[str, Any] = {"temperature": 0, **CASES[case]}
    extra = {k: body.pop(k) for k in ("reasoning_effort", "ignore_eos") if k in body}

    def ask(s: ServerProcess) -> Any:
        client = client_for(s)
        return chat_openai(client, stream, model=client.models.list().data[0].id, extra_body=extra, **body)

    plain, fast = ask(server), ask(spec)
    assert (fast.content, fast.reasoning, fast.finish_reason) == (
        plain.content,
        plain.reasoning,
        plain.finish_reason,
    )
    assert fast.usage is not None and plain.usage is not None
    assert fast.usage["completion_tokens"] == plain.usage["completion_tokens"]
    kept = fast.usage["completion_tokens_details"]["accepted_prediction_tokens"]
    assert plain.usage["completion_tokens_details"]["accepted_prediction_tokens"] == 0
    drafted, accepted = spec_counters(spec)
    assert drafted > before[0], "no draft was made"
    if case != "json":
        assert accepted > before[1], "the reply repeats itself: some draft must be kept"
        assert kept > 0, fast.usage
