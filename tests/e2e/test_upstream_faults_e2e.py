"""A dead, dying or frozen upstream behind `hermesd serve --upstream`: one clear error, never a hung
client, and the daemon survives and recovers. The upstream is a real hermesd on the tiny model; it
is killed (SIGKILL) or frozen (SIGSTOP) for real."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.server_process import ServerProcess, free_port, run_server, wait_ready
from tests.e2e.upstream_cases import FRANCE, client
from tests.fixtures.behaviours import LONG_PROMPT
from tests.fixtures.tiny_models import tiny_model

pytestmark = pytest.mark.e2e
# room for a long generation: killed after its first chunk, the upstream is still far from done
UPSTREAM_FLAGS = ("--parallel", "1", "--ctx", "8192")


def sub(tmp: Path, name: str) -> Path:
    (tmp / name).mkdir(exist_ok=True)
    return tmp / name


def ask(server: ServerProcess, content: str = FRANCE.question) -> str:
    c = client(server)
    r = c.chat.completions.create(
        model=c.models.list().data[0].id, messages=[{"role": "user", "content": content}], temperature=0
    )
    return str(r.choices[0].message.content)


def test_upstream_down_at_start_is_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with run_server(None, tmp_path, "--upstream", url, wait=False) as server:
        assert server.proc.wait(timeout=60) == 2
        errors = [line for line in server.log().splitlines() if line.startswith("hermesd: error:")]
    assert len(errors) == 1 and f"cannot reach the upstream {url}" in errors[0]


def test_upstream_killed_mid_stream(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (
        run_server(tiny_model("qwen3"), sub(tmp_path, "a"), *UPSTREAM_FLAGS, port=port) as upstream,
        run_server(None, sub(tmp_path, "front"), "--upstream", url) as front,
    ):
        c = client(front)
        stream = c.chat.completions.create(
            model=c.models.list().data[0].id,
            messages=[{"role": "user", "content": LONG_PROMPT}],
            temperature=0,
            max_tokens=6000,
            extra_body={"ignore_eos": True},
            stream=True,
        )
        got = ""
        with pytest.raises(openai.APIError) as err:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    got += chunk.choices[0].delta.content
                    if upstream.proc.poll() is None:
                        upstream.proc.send_signal(signal.SIGKILL)  # after the first text came through
                        upstream.proc.wait()
        assert got.startswith("1")
        assert "upstream" in str(err.value)

        # the daemon is alive; /health says why it cannot serve, and so does a new request
        health = httpx.get(front.base_url + "/health", timeout=10)
        assert health.status_code == 503 and "upstream" in health.json()["error"]
        with pytest.raises(openai.APIStatusError) as refused:
            ask(front)
        assert refused.value.status_code == 503 and refused.value.code == "upstream_unavailable"
        assert front.proc.poll() is None

        # the upstream comes back at the same address: /health turns 200 and requests work again
        with run_server(tiny_model("qwen3"), sub(tmp_path, "b"), *UPSTREAM_FLAGS, port=port):
            wait_ready(front, timeout=60)
            assert ask(front) == FRANCE.answer


def test_frozen_upstream_times_out_cleanly(tmp_path: Path) -> None:
    port = free_port()
    with (
        run_server(tiny_model("qwen3"), sub(tmp_path, "a"), *UPSTREAM_FLAGS, port=port) as upstream,
        run_server(None, sub(tmp_path, "front"), "--upstream", f"http://127.0.0.1:{port}",
                   "--upstream-timeout", "2") as front,
    ):  # fmt: skip
        os.kill(upstream.pid, signal.SIGSTOP)  # the kernel still accepts connections; nothing answers
        try:
            for stream in (False, True):
                c = client(front)
                with pytest.raises(openai.APIStatusError) as err:
                    r = c.chat.completions.create(
                        model=c.models.list().data[0].id,
                        messages=[{"role": "user", "content": FRANCE.question}],
                        stream=stream,
                    )
                    if stream:
                        list(r)  # type: ignore[call-overload]
                assert err.value.status_code == 504 and err.value.code == "upstream_timeout"
            assert front.proc.poll() is None
        finally:
            os.kill(upstream.pid, signal.SIGCONT)
        # a timeout does not mean the upstream is gone: once it answers again, so does the front
        deadline = time.monotonic() + 60
        while httpx.get(front.base_url + "/health", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the front did not recover"
            time.sleep(0.2)
        assert ask(front) == FRANCE.answer
