"""`hermesd chat` and `hermesd ps` against a real `hermesd serve` on the tiny models: a pipe that gets
only the answer, an interactive session in a pseudo-terminal (streamed answer, dimmed reasoning,
Ctrl-C that stops the generation on the server and stays at the prompt), errors as one line, and
`ps` showing the model, slots, context and uptime."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pexpect
import pytest

from tests.e2e.server_process import ServerProcess, free_port, hermesd_cmd, run_server
from tests.fixtures.behaviours import LONG_PROMPT, LONG_REPLY, QUESTIONS
from tests.fixtures.tiny_models import tiny_model

pytestmark = pytest.mark.e2e

DIM = "\x1b[2m"
RESET = "\x1b[0m"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
PROMPT = ">>> "


def hermesd(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        hermesd_cmd(*args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, **(env or {})),
    )


def model_id(server: ServerProcess) -> str:
    return str(httpx.get(server.base_url + "/v1/models").json()["data"][0]["id"])


@pytest.mark.parametrize("think", [False, True])
def test_a_pipe_gets_only_the_answer(server: ServerProcess, think: bool) -> None:
    q = QUESTIONS[1]
    flag = "--think" if think else "--no-think"
    result = hermesd("chat", "--url", server.base_url, flag, "--set", "temperature=0", stdin=q.question)
    assert result.returncode == 0, result.stderr
    assert result.stdout == q.answer + "\n"  # the reasoning, when there is some, stays out of it
    assert result.stderr == ""


def test_pipe_errors_are_one_line_and_a_failure(qwen3_server: ServerProcess) -> None:
    unknown = hermesd("chat", "--url", qwen3_server.base_url, "--model", "gpt-4", stdin="Hi")
    nobody = hermesd("chat", "--url", f"http://127.0.0.1:{free_port()}", stdin="Hi")
    for result, words in (
        (unknown, "The model 'gpt-4' does not exist"),
        (nobody, "no hermesd is answering at http://127.0.0.1:"),
    ):
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.startswith("hermesd: error: ") and words in result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_keys_chat_and_ps_with_the_user_key_and_refused_without(e2e_tmp: Path) -> None:
    with run_server(tiny_model("qwen3"), e2e_tmp, "--api-key", "user-1", "--ctx", "1024") as server:
        q = QUESTIONS[0]
        refused = hermesd("chat", "--url", server.base_url, "--api-key", "wrong", stdin=q.question)
        assert refused.returncode == 1 and refused.stdout == ""
        assert "refused the API key" in refused.stderr and refused.stderr.count("\n") == 1
        answered = hermesd(
            "chat", "--url", server.base_url, stdin=q.question, env={"HERMESD_API_KEY": "user-1"}
        )
        assert answered.returncode == 0 and answered.stdout == q.answer + "\n"
        ps = hermesd("ps", "--url", server.base_url, "--json", env={"HERMESD_API_KEY": "user-1"})
        assert ps.returncode == 0 and json.loads(ps.stdout)["context"]["per_slot"] == 1024
        assert hermesd("ps", "--url", server.base_url).returncode == 1


def metric(server: ServerProcess, name: str) -> float:
    return server.metrics().get(name, 0.0)


CANCELLED = 'hermesd_requests_finished_total{reason="cancelled"}'


@pytest.fixture
def session(qwen3_server: ServerProcess) -> Iterator[pexpect.spawn]:
    cmd = hermesd_cmd("chat", "--url", qwen3_server.base_url, "--set", "temperature=0")
    env = dict(os.environ, TERM="xterm-256color", PYTHONUNBUFFERED="1")
    env.pop("NO_COLOR", None)  # the dimmed reasoning is part of what is checked
    child = pexpect.spawn(cmd[0], cmd[1:], env=env, encoding="utf-8", timeout=60, dimensions=(50, 250))
    child.logfile_read = sys.stdout  # shown by pytest when the test fails
    child.expect_exact(PROMPT)
    try:
        yield child
    finally:
        if child.isalive():
            child.terminate(force=True)


def plain(text: str) -> str:
    return ANSI.sub("", text)


def say(child: pexpect.spawn, line: str) -> str:
    """Send a line, return what came back up to the next prompt."""
    child.sendline(line)
    child.expect_exact(PROMPT)
    return str(child.before)


def test_an_interactive_session(session: pexpect.spawn, qwen3_server: ServerProcess) -> None:
    child = session
    france, total = QUESTIONS[0], QUESTIONS[1]
    assert france.answer in say(child, france.question)

    assert "reasoning: on" in say(child, "/think on")
    say(child, "/clear")  # the tiny models answer single questions only
    out = say(child, total.question)
    # the reasoning comes first, dimmed as it streams, then the answer undimmed
    text = plain(out)
    assert text.index(total.reasoning) < text.index(total.answer) and text.rstrip().endswith(total.answer)
    # every piece of the reasoning is dimmed, however the stream happened to chunk it (a busy
    # machine hands over several tokens per chunk)
    assert out.startswith(DIM, len(total.question) + 2)
    dimmed = "".join(re.findall(re.escape(DIM) + "(.*?)" + re.escape(RESET), out, re.S))
    assert plain(dimmed).strip() == total.reasoning
    assert total.answer in out[out.rindex(RESET) :]

    say(child, "/reasoning hide")
    say(child, "/clear")
    text = plain(say(child, total.question))
    assert "thought for" in text and total.reasoning not in text and total.answer in text
    assert total.reasoning in plain(say(child, "/reasoning"))  # expanded on demand

    say(child, "/think off")
    say(child, "/clear")
    # a long answer: past the end of turn, until Ctrl-C stops it
    say(child, "/set ignore_eos on")
    say(child, "/set max_tokens 1500")
    cancelled = metric(qwen3_server, CANCELLED)
    child.sendline(LONG_PROMPT)
    child.expect_exact(LONG_REPLY[:20])
    child.sendintr()
    child.expect_exact("[stopped]", timeout=10)
    child.expect_exact(PROMPT)
    # the server saw the client go and aborted the generation
    deadline = time.monotonic() + 10
    while metric(qwen3_server, CANCELLED) <= cancelled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(qwen3_server, CANCELLED) == cancelled + 1
    assert metric(qwen3_server, "hermesd_requests_running") == 0

    # still talking: a new question after the stop
    say(child, "/set ignore_eos off")
    say(child, "/set max_tokens")
    say(child, "/clear")
    assert france.answer in say(child, france.question)
    assert "unknown command /frobnicate" in say(child, "/frobnicate")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_ctrl_d_leaves(session: pexpect.spawn) -> None:
    session.sendeof()
    session.expect(pexpect.EOF)
    session.close()
    assert session.exitstatus == 0


def ps_json(server: ServerProcess) -> dict[str, Any]:
    result = hermesd("ps", "--url", server.base_url, "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_ps_shows_model_slots_context_memory_and_uptime(qwen3_server: ServerProcess) -> None:
    server = qwen3_server
    status = ps_json(server)
    assert status["status"] == "ok" and status["model"]["id"] == model_id(server)
    assert status["context"]["per_slot"] == 2048 and status["slots"]["total"] == 4  # --ctx, --parallel
    assert status["adapters"] == []
    (cpu,) = status["devices"]
    assert cpu["kind"] == "cpu" and cpu["kv_bytes"] > 0 and cpu["total_bytes"] >= cpu["model_bytes"] > 0
    assert status["uptime_s"] > 0

    # a generation in flight is a busy slot
    body = {
        "model": model_id(server),
        "messages": [{"role": "user", "content": LONG_PROMPT}],
        "stream": True,
        "ignore_eos": True,
        "max_tokens": 1500,
    }
    started, stop = threading.Event(), threading.Event()

    def generate() -> None:
        with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=60) as r:
            for _ in r.iter_lines():
                started.set()
                if stop.is_set():
                    return

    worker = threading.Thread(target=generate)
    worker.start()
    try:
        assert started.wait(30)
        # the daemon's own endpoint, at once: the tiny model writes 1500 tokens in well under a
        # second on a quiet machine, less than `hermesd ps` takes to start
        busy = httpx.get(server.base_url + "/v1/status", timeout=10).json()
        assert busy["slots"]["busy"] == 1 and busy["slots"]["waiting"] == 0
        assert busy["uptime_s"] > status["uptime_s"]
    finally:
        stop.set()
        worker.join(60)

    table = hermesd("ps", "--url", server.base_url)
    assert table.returncode == 0, table.stderr
    for words in (model_id(server), "2048 tokens per slot", "in all", "uptime", "CPU"):
        assert words in table.stdout
