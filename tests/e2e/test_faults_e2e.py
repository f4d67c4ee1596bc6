"""Load and faults on a real server: many clients against few slots, clients that hang up, SIGTERM
while streams run, a model that cannot load, an open bind without a key."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.server_process import hermesd_cmd, run_server
from tests.fixtures.behaviours import LONG_PROMPT, LONG_REPLY
from tests.fixtures.tiny_models import tiny_model
from tests.harness import parse_sse, summarize_chunks

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def body(model: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": LONG_PROMPT}],
        "temperature": 0,
        "stream": True,
        **extra,
    }


async def client_run(http: httpx.AsyncClient, payload: dict[str, Any], hang_up_after: int | None) -> str:
    """'ok' (full reply), '503', 'gone' (we hung up), or what went wrong."""
    async with http.stream("POST", "/v1/chat/completions", json=payload) as r:
        if r.status_code == 503:
            await r.aread()
            return "503"
        if r.status_code != 200:
            return f"status {r.status_code}"
        lines = []
        async for line in r.aiter_lines():
            lines.append(line)
            if hang_up_after is not None and len(lines) >= hang_up_after:
                return "gone"
    result = summarize_chunks(parse_sse("\n".join(lines)))
    return "ok" if result.content == LONG_REPLY and result.finish_reason == "stop" else f"wrong: {result}"


async def crowd(base_url: str, model: str, n: int) -> list[str]:
    limits = httpx.Limits(max_connections=n + 4)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as http:
        return list(
            await asyncio.gather(
                *(client_run(http, body(model), hang_up_after=6 if i % 2 else None) for i in range(n))
            )
        )


def test_64_clients_against_4_slots(e2e_tmp: Path) -> None:
    with run_server(tiny_model("qwen3"), e2e_tmp, "--parallel", "4", "--max-queue", "12") as server:
        model = httpx.get(server.base_url + "/v1/models").json()["data"][0]["id"]
        proc = psutil.Process(server.pid)
        rss_before = proc.memory_info().rss
        started = time.monotonic()
        outcomes = asyncio.run(asyncio.wait_for(crowd(server.base_url, model, 64), timeout=300))
        elapsed = time.monotonic() - started
        counts = {k: outcomes.count(k) for k in set(outcomes)}
        assert set(outcomes) <= {"ok", "503", "gone"}, counts
        assert counts.get("ok", 0) >= 4 and counts.get("503", 0) >= 1, counts
        # hung-up clients free their slots: nothing is left running once the crowd is gone
        deadline = time.monotonic() + 10
        while server.metrics()["hermesd_requests_running"] and time.monotonic() < deadline:
            time.sleep(0.05)
        m = server.metrics()
        assert m["hermesd_requests_running"] == 0 and m["hermesd_requests_waiting"] == 0
        assert m.get('hermesd_requests_finished_total{reason="cancelled"}', 0) >= 1
        rss_growth = (proc.memory_info().rss - rss_before) / 2**20
        assert rss_growth < 200, f"resident memory grew by {rss_growth:.0f} MiB"
        print(f"64 clients in {elapsed:.1f} s: {counts}, RSS +{rss_growth:.0f} MiB")


async def stream_all(base_url: str, payloads: list[dict[str, Any]], on_started: Any) -> list[Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:

        async def one(p: dict[str, Any]) -> Any:
            lines = []
            async with http.stream("POST", "/v1/chat/completions", json=p) as r:
                async for line in r.aiter_lines():
                    lines.append(line)
                    if len(lines) == 3:
                        on_started()
            return summarize_chunks(parse_sse("\n".join(lines)))

        return list(await asyncio.gather(*(one(p) for p in payloads)))


@pytest.mark.parametrize("drain", ["finish", "deadline"])
def test_sigterm_lets_streams_end_cleanly_and_exits_0(e2e_tmp: Path, drain: str) -> None:
    # a zero deadline: the streams, started before the signal and thousands of tokens long, cannot
    # have finished when the drain ends, however fast the machine
    flags = ["--parallel", "4"] + (["--drain-timeout", "0"] if drain == "deadline" else [])
    with run_server(tiny_model("qwen3"), e2e_tmp, *flags) as server:
        model = httpx.get(server.base_url + "/v1/models").json()["data"][0]["id"]
        extra = {"max_tokens": 8000, "ignore_eos": True} if drain == "deadline" else {}
        payloads = [body(model, **extra) for _ in range(3)]
        started = []

        # the signal goes once every stream has started: a request that reaches the server after
        # it is (rightly) refused with a 503 before any stream begins, which is not what this tests
        def on_started() -> None:
            started.append(True)
            if len(started) == len(payloads):
                server.proc.send_signal(signal.SIGTERM)

        results = asyncio.run(stream_all(server.base_url, payloads, on_started))
        assert server.proc.wait(timeout=60) == 0
    for r in results:  # every stream ended with [DONE] (summarize_chunks checks it)
        if drain == "finish":
            assert r.content == LONG_REPLY and r.finish_reason == "stop" and r.error is None
        else:
            assert r.error is not None and "shutting down" in r.error["message"]


def test_model_that_cannot_load_fails_serve_clearly(tmp_path: Path) -> None:
    # a valid GGUF container that is not a model llama.cpp can run
    from tests.fixtures.bad_ggufs import build_good_model

    path = tmp_path / "not-a-model.gguf"
    build_good_model(path)
    r = subprocess.run(
        hermesd_cmd("serve", "--model", str(path), "--port", "0"), capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("hermesd: error: ")
    assert str(path) in r.stderr


def test_open_bind_without_a_key_refuses_to_start() -> None:
    r = subprocess.run(
        hermesd_cmd("serve", "--model", str(tiny_model("qwen3")), "--host", "0.0.0.0", "--port", "0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "without an API key" in r.stderr and "Traceback" not in r.stderr
