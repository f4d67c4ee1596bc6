"""The chats that `hermesd serve --upstream` must answer exactly as hermesd serving the model itself
does (greedy), shared by the tests with hermesd and with llama-server as the upstream."""

from __future__ import annotations

from typing import Any

import openai

from tests.e2e.server_process import ServerProcess
from tests.fixtures.behaviours import QUESTIONS, WEATHER_QUESTION, WEATHER_TOOL
from tests.harness import ChatResult, chat_openai

FRANCE = QUESTIONS[0]
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 40}},
    "required": ["answer"],
}

# name -> the request's fields (besides model, temperature 0 and stream)
CASES: dict[str, dict[str, Any]] = {
    "think-off": {"messages": [{"role": "user", "content": FRANCE.question}], "extra_body": {"think": False}},
    "think-on": {"messages": [{"role": "user", "content": FRANCE.question}], "extra_body": {"think": True}},
    # the upstream knows no budget: the front ends the reasoning where hermesd's engine would
    "think-budget": {
        "messages": [{"role": "user", "content": QUESTIONS[1].question}],
        "extra_body": {"think": True, "max_reasoning_tokens": 5},
    },
    "tool-call": {"messages": [{"role": "user", "content": WEATHER_QUESTION}], "tools": [WEATHER_TOOL]},
    "tool-call-think": {
        "messages": [{"role": "user", "content": WEATHER_QUESTION}],
        "tools": [WEATHER_TOOL],
        "extra_body": {"think": True},
    },
    "json-schema": {
        "messages": [{"role": "user", "content": "What color is the sky?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA}},
        "max_tokens": 60,
    },
    "json-schema-think": {
        "messages": [{"role": "user", "content": "What color is the sky?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA}},
        "extra_body": {"think": True},
        "max_tokens": 120,
    },
    "stop-string": {"messages": [{"role": "user", "content": FRANCE.question}], "stop": [" Paris"]},
    "length": {"messages": [{"role": "user", "content": "Count from 1 to 100."}], "max_tokens": 7},
}


def client(server: ServerProcess, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, timeout=120)


def model_id(c: openai.OpenAI) -> str:
    return str(c.models.list().data[0].id)


def answer(c: openai.OpenAI, case: str, stream: bool) -> ChatResult:
    return chat_openai(c, stream, model=model_id(c), temperature=0, **CASES[case])


def comparable(r: ChatResult) -> dict[str, Any]:
    """What must be byte-identical: the text, the reasoning, the calls (not their random ids), the
    finish reason and the token counts (the reasoning count is hermesd's estimate per chunk through
    an upstream, so it is left out)."""
    usage = r.usage or {}
    return {
        "content": r.content,
        "reasoning": r.reasoning,
        "tool_calls": [(c["name"], c["arguments"]) for c in r.tool_calls],
        "finish_reason": r.finish_reason,
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
    }
