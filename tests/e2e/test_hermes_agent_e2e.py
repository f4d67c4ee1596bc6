"""Nous Research's Hermes Agent, unchanged, against a real `hermesd serve` at 64K context.

Hermes Agent refuses a model with less than 64K tokens of context and finds the context by asking
the server, so hermesd serves a tiny model whose file states 64K (tests/fixtures/long_context_model.py)
with `--min-ctx 65536`. The agent pins openai 2.x, which the test extras cannot share, so it runs
from a venv of its own that `.ci/hermes-agent-venv DIR` makes before the tests (they reach no
network): HERMESD_TEST_HERMES_AGENT_VENV names it. Under CI a missing venv fails the test.

The agent's own processes get a proxy that goes nowhere for everything but loopback, so nothing
it tries (update checks, model catalogues) leaves the machine and all it can reach is hermesd.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server_process import ServerProcess, hermesd_cmd, run_server
from tests.fixtures.long_context_model import LONG_CONTEXT, long_context_model

pytestmark = pytest.mark.e2e

VENV_ENV = "HERMESD_TEST_HERMES_AGENT_VENV"
MODEL_ID = "tiny-hermes"
KEY = "agent-e2e-key"  # the daemon requires it: a turn that completes was configured with it
# Off its training chats (the agent's long system prompt), the tiny model rarely ends a turn by
# itself; without a cap each call would generate until the 64K context is full.
MAX_TOKENS = 48
NOWHERE = "http://127.0.0.1:9"


def agent_venv() -> Path:
    value = os.environ.get(VENV_ENV, "")
    venv = Path(value) if value else None
    if venv is None or not (venv / "bin" / "hermes").exists():
        reason = f"no Hermes Agent venv ({VENV_ENV}={value!r}): make one with .ci/hermes-agent-venv DIR"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return venv


@pytest.fixture(scope="module")
def venv() -> Path:
    return agent_venv()


@pytest.fixture(scope="module")
def agent_server(venv: Path, e2e_tmp: Path) -> Iterator[ServerProcess]:
    flags = ("--min-ctx", str(LONG_CONTEXT), "--parallel", "1", "--served-model-name", MODEL_ID)
    env = {"HERMESD_MAX_TOKENS_LIMIT": str(MAX_TOKENS)}
    with run_server(long_context_model("qwen3"), e2e_tmp, *flags, "--api-key", KEY, env=env) as server:
        yield server


def agent_env(home: Path) -> dict[str, str]:
    """A new user's environment: a fresh HOME, no provider variables, no way off the machine."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "ANTHROPIC_", "OPENROUTER_", "HERMES_", "HERMESD_"))
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    }
    proxies = {name: NOWHERE for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
    return {**env, **proxies, "NO_PROXY": "127.0.0.1,localhost", "HOME": str(home)}


def served_context(server: ServerProcess) -> int:
    models = httpx.get(server.base_url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    return int(models.json()["data"][0]["context_length"])


DISCOVER = """
import sys
from agent.model_metadata import get_model_context_length
model, base_url, key = sys.argv[1:]
print(get_model_context_length(model, base_url=base_url, api_key=key, provider="custom"))
"""


def test_the_agent_discovers_the_served_context(
    venv: Path, agent_server: ServerProcess, tmp_path: Path
) -> None:
    assert served_context(agent_server) == LONG_CONTEXT
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", DISCOVER, MODEL_ID, agent_server.base_url + "/v1", KEY],
        env=agent_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # unknown models default to far more (256K); 65536 can only come from hermesd
    assert int(done.stdout.strip().splitlines()[-1]) == LONG_CONTEXT


def test_one_shot_turn_with_the_config_hermesd_launch_writes(
    venv: Path, agent_server: ServerProcess, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    args = ("--write", "--home", str(home), "--url", agent_server.base_url, "--api-key", KEY)
    launch = subprocess.run(
        hermesd_cmd("launch", "hermes-agent", *args),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert launch.returncode == 0, launch.stderr
    assert (home / ".hermes" / "config.yaml").exists()
    assert f"context: {LONG_CONTEXT} tokens" in launch.stdout
    turns_before = agent_server.log().count('"path":"/v1/chat/completions","status":200')

    # `--toolsets todo`: the default toolsets' schemas are ~30K tokens of the tiny model's
    # vocabulary, minutes of prompt processing on a CPU; one small toolset still makes a real
    # agent turn (system prompt, tools, the agent's own max_tokens from the discovered context)
    agent = [str(venv / "bin" / "hermes"), "-z", "What is 2+2?", "--provider", "custom", "--model", MODEL_ID]
    done = subprocess.run(
        [*agent, "--toolsets", "todo"],
        env=agent_env(home),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert done.returncode == 0, f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-2000:]}"
    assert done.stdout.strip(), done.stderr
    assert "agent failed" not in done.stderr
    # the answer came from hermesd, through the URL and key `hermesd launch` wrote
    turns = agent_server.log().count('"path":"/v1/chat/completions","status":200') - turns_before
    assert turns >= 1, agent_server.log()[-3000:]
