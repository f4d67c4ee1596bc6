"""Continuous batching: concurrent streams give exactly what they give alone, cancellation and
queue overflow leave the others untouched, and prefix reuse changes speed, not output."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server_process import ServerProcess, run_server
from tests.fixtures.behaviours import LONG_PROMPT, QUESTIONS
from tests.fixtures.tiny_models import tiny_model
from tests.harness import ChatResult, parse_sse, summarize_chunks, summarize_message

pytestmark = pytest.mark.e2e


def model_of(server: ServerProcess) -> str:
    return str(httpx.get(server.base_url + "/v1/models").json()["data"][0]["id"])


def requests_for(model: str) -> list[dict[str, Any]]:
    """8 different requests: lengths, stops, thinking, seeds (temperature > 0 with a fixed seed)."""
    out: list[dict[str, Any]] = []
    for i, q in enumerate(QUESTIONS):
        out.append({"messages": [{"role": "user", "content": q.question}], "think": bool(i % 2)})
    out += [
        {"messages": [{"role": "user", "content": LONG_PROMPT}], "max_tokens": 60},
        {"messages": [{"role": "user", "content": LONG_PROMPT}], "stop": [" 23 "]},
        {"messages": [{"role": "user", "content": LONG_PROMPT}]},
        {
            "messages": [{"role": "user", "content": QUESTIONS[0].question}],
            "think": True,
            "max_reasoning_tokens": 4,
        },
        {
            "messages": [{"role": "user", "content": "Tell me a story."}],
            "temperature": 0.9,
            "seed": 7,
            "max_tokens": 40,
        },
        # penalties (a chain with llama.cpp's penalties sampler; its binding takes n_vocab first)
        {
            "messages": [{"role": "user", "content": LONG_PROMPT}],
            "presence_penalty": 0.5,
            "frequency_penalty": 0.3,
            "repeat_penalty": 1.1,
            "max_tokens": 40,
        },
    ]
    for r in out:
        r.setdefault("temperature", 0)
        r["model"] = model
    return out


async def run_one(http: httpx.AsyncClient, body: dict[str, Any], stream: bool) -> ChatResult:
    payload = dict(body, stream=stream)
    r = await http.post("/v1/chat/completions", json=payload, timeout=120)
    assert r.status_code == 200, r.text
    return summarize_chunks(parse_sse(r.text)) if stream else summarize_message(r.json())


async def sequential_then_concurrent(server: ServerProcess) -> tuple[list[ChatResult], list[ChatResult]]:
    bodies = requests_for(model_of(server))
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        alone = [await run_one(http, b, False) for b in bodies]
        together = await asyncio.gather(*(run_one(http, b, i % 2 == 0) for i, b in enumerate(bodies)))
    return alone, list(together)


def test_concurrent_outputs_equal_one_at_a_time(qwen3_server: ServerProcess) -> None:
    before = qwen3_server.metrics()
    alone, together = asyncio.run(sequential_then_concurrent(qwen3_server))
    after = qwen3_server.metrics()
    for a, t in zip(alone, together, strict=True):
        assert a.finish_reason in ("stop", "length"), a  # every request generated, none errored
        assert (t.reasoning, t.content, t.finish_reason) == (a.reasoning, a.content, a.finish_reason)
    # the concurrent requests really shared decode steps: fewer steps than tokens generated
    steps = after["hermesd_decode_steps_total"] - before["hermesd_decode_steps_total"]
    tokens = after["hermesd_generated_tokens_total"] - before["hermesd_generated_tokens_total"]
    assert steps < tokens


async def cancel_one(server: ServerProcess) -> tuple[list[ChatResult], list[ChatResult]]:
    bodies = requests_for(model_of(server))[:4]
    long_body = {
        "model": model_of(server),
        "prompt": "zq",
        "max_tokens": 1500,
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
    }
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as http:
        alone = [await run_one(http, b, False) for b in bodies]

        async def doomed() -> None:
            async with http.stream("POST", "/v1/completions", json=long_body) as r:
                n = 0
                async for _ in r.aiter_lines():
                    n += 1
                    if n > 10:
                        return  # hang up mid-stream

        results = await asyncio.gather(doomed(), *(run_one(http, b, True) for b in bodies))
    return alone, list(results[1:])  # type: ignore[arg-type]


def test_cancelling_one_stream_leaves_the_others_unchanged(qwen3_server: ServerProcess) -> None:
    alone, together = asyncio.run(cancel_one(qwen3_server))
    for a, t in zip(alone, together, strict=True):
        assert (t.reasoning, t.content) == (a.reasoning, a.content)


async def flood(server: ServerProcess, n: int) -> list[httpx.Response]:
    body = {
        "model": model_of(server),
        "prompt": "zq",
        "max_tokens": 300,
        "ignore_eos": True,
        "temperature": 0,
    }
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as http:
        return list(await asyncio.gather(*(http.post("/v1/completions", json=body) for _ in range(n))))


def test_queue_overflow_is_503_and_the_server_keeps_serving(e2e_tmp: Path) -> None:
    with run_server(tiny_model("qwen3"), e2e_tmp, "--parallel", "1", "--max-queue", "1") as server:
        responses = asyncio.run(flood(server, 6))
        codes = sorted(r.status_code for r in responses)
        assert codes.count(200) >= 2 and 503 in codes and set(codes) <= {200, 503}, codes
        busy = next(r for r in responses if r.status_code == 503)
        assert busy.headers["retry-after"] and busy.json()["error"]["code"] == "server_busy"
        ok = httpx.post(
            server.base_url + "/v1/completions",
            timeout=60,
            json={"model": model_of(server), "prompt": "x", "max_tokens": 3},
        )
        assert ok.status_code == 200


def conversation(model: str, turns: int) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for i in range(turns):
        q = QUESTIONS[i % len(QUESTIONS)]
        messages.append({"role": "user", "content": q.question})
        if i < turns - 1:
            messages.append({"role": "assistant", "content": q.answer})
    return {"model": model, "messages": messages, "temperature": 0}


def test_prefix_reuse_reports_cached_tokens_and_changes_nothing(
    qwen3_server: ServerProcess, e2e_tmp: Path
) -> None:
    server = qwen3_server
    m = model_of(server)
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        first = http.post("/v1/chat/completions", json=conversation(m, 2)).json()
        warm = http.post("/v1/chat/completions", json=conversation(m, 3)).json()
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] >= 0
    cached = warm["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= first["usage"]["prompt_tokens"] - 1
    with run_server(tiny_model("qwen3"), e2e_tmp, "--parallel", "1") as fresh:
        cold = httpx.post(
            fresh.base_url + "/v1/chat/completions", timeout=60, json=conversation(model_of(fresh), 3)
        ).json()
    assert cold["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert warm["choices"][0]["message"] == cold["choices"][0]["message"]
    assert warm["usage"]["prompt_tokens"] == cold["usage"]["prompt_tokens"]


SHARED = "You are a careful assistant. " * 12  # a system prompt many conversations share


async def shared_prefix(server: ServerProcess) -> tuple[dict[str, Any], dict[str, Any]]:
    """While one request streams in one slot, a second one with the same long prefix starts in the
    other (empty) slot: the prefix's cells come from the running slot."""
    m = model_of(server)
    running = {
        "model": m,
        "prompt": SHARED + "zq",
        "max_tokens": 400,
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
    }
    second = {
        "model": m,
        "prompt": SHARED + LONG_PROMPT,
        "max_tokens": 24,
        "ignore_eos": True,
        "temperature": 0,
    }
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=120) as http,
        http.stream("POST", "/v1/completions", json=running) as r,
    ):
        lines = r.aiter_lines()
        async for line in lines:
            if line.startswith("data:"):
                break  # the first request is running: now the second arrives
        reply = (await http.post("/v1/completions", json=second)).json()
        async for _ in lines:
            pass
    return second, reply


def test_a_shared_prefix_is_reused_from_a_running_slot(e2e_tmp: Path) -> None:
    with run_server(tiny_model("qwen3"), e2e_tmp, "--parallel", "2") as server:
        body, warm = asyncio.run(shared_prefix(server))
    cached = warm["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= warm["usage"]["prompt_tokens"] // 2, warm["usage"]  # the shared prefix, at least
    with run_server(tiny_model("qwen3"), e2e_tmp, "--parallel", "2") as fresh:
        cold = httpx.post(fresh.base_url + "/v1/completions", timeout=60, json=body).json()
    assert cold["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert cold["usage"]["completion_tokens"] == 24 and cold["choices"][0]["text"].strip()
    assert warm["choices"][0]["text"] == cold["choices"][0]["text"]
