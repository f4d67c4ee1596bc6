"""`hermesd launch` against a real `hermesd serve` (with an API key and a `claude-*` alias): what it
writes for each client is read back the way that client reads it, and the real SDK the client is
built on (anthropic for Claude Code, openai's Responses API for Codex, Chat Completions for Open
WebUI) reaches the model with those settings alone. Hermes Agent itself runs in
test_hermes_agent_e2e.py, from the config.yaml this command writes."""

from __future__ import annotations

import json
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest
import yaml

from tests.e2e.server_process import ServerProcess, hermesd_cmd, run_server
from tests.fixtures.behaviours import QUESTIONS
from tests.fixtures.tiny_models import tiny_model

pytestmark = pytest.mark.e2e

CTX = 1024
KEY = "launch-e2e-key"
MODEL_ID = "tiny-qwen3"
Q = QUESTIONS[0]


@pytest.fixture(scope="module")
def launch_server(e2e_tmp: Path) -> Iterator[ServerProcess]:
    flags = ("--parallel", "1", "--ctx", str(CTX), "--served-model-name", MODEL_ID, "--api-key", KEY)
    with run_server(tiny_model("qwen3"), e2e_tmp, *flags, "--model-alias", f"claude-*={MODEL_ID}") as server:
        yield server


def launch(server: ServerProcess, client: str, home: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ("--url", server.base_url, "--api-key", KEY, "--home", str(home), *extra)
    done = subprocess.run(hermesd_cmd("launch", client, *args), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"context: {CTX} tokens per request" in done.stdout
    return done


def test_claude_code_settings_reach_the_model(launch_server: ServerProcess, tmp_path: Path) -> None:
    settings = tmp_path / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps({"env": {"DISABLE_TELEMETRY": "1"}, "model": "opus"}))
    done = launch(launch_server, "claude", tmp_path, "--write")
    assert f"reach {MODEL_ID} through the daemon's --model-alias" in done.stdout
    written = json.loads(settings.read_text())
    assert written["model"] == "opus" and written["env"]["DISABLE_TELEMETRY"] == "1"
    backups = list(settings.parent.glob("settings.json.bak-*"))
    assert [json.loads(b.read_text())["model"] for b in backups] == ["opus"]

    env = written["env"]
    client = anthropic.Anthropic(
        base_url=env["ANTHROPIC_BASE_URL"], auth_token=env["ANTHROPIC_AUTH_TOKEN"], max_retries=0
    )
    for name in (env["ANTHROPIC_MODEL"], "claude-sonnet-4-5"):  # the alias takes the fixed names
        reply = client.messages.create(
            model=name,
            max_tokens=100,
            messages=[{"role": "user", "content": Q.question}],
            extra_body={"temperature": 0},
        )
        assert [b.text for b in reply.content if b.type == "text"] == [Q.answer]


def test_codex_config_reaches_the_responses_api(launch_server: ServerProcess, tmp_path: Path) -> None:
    config = tmp_path / ".codex" / "config.toml"
    config.parent.mkdir()
    config.write_text('# mine\napproval_policy = "never"\n\n[mcp_servers.docs]\ncommand = "docs"\n')
    done = launch(launch_server, "codex", tmp_path, "--write")
    parsed = tomllib.loads(config.read_text())
    assert parsed["approval_policy"] == "never" and parsed["mcp_servers"]["docs"]["command"] == "docs"
    assert parsed["model_context_window"] == CTX
    provider = parsed["model_providers"][parsed["model_provider"]]
    assert provider["wire_api"] == "responses"
    # the key is where Codex looks for it: the variable env_key names, as printed to export
    assert f"export {provider['env_key']}={KEY}" in done.stdout.splitlines()

    client = openai.OpenAI(base_url=provider["base_url"], api_key=KEY, max_retries=0)
    reply = client.responses.create(
        model=parsed["model"], input=Q.question, reasoning={"effort": "none"}, temperature=0
    )
    assert reply.output_text == Q.answer


def test_open_webui_env_reaches_chat_completions(launch_server: ServerProcess, tmp_path: Path) -> None:
    launch(launch_server, "open-webui", tmp_path, "--write")
    env_file = tmp_path / ".config" / "hermesd" / "open-webui.env"
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    client = openai.OpenAI(base_url=env["OPENAI_API_BASE_URL"], api_key=env["OPENAI_API_KEY"], max_retries=0)
    assert [m.id for m in client.models.list().data] == [MODEL_ID]  # what Open WebUI lists
    reply = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": Q.question}],
        temperature=0,
        extra_body={"reasoning_effort": "none"},
    )
    assert reply.choices[0].message.content == Q.answer


def test_hermes_agent_config_and_printing_without_write(launch_server: ServerProcess, tmp_path: Path) -> None:
    done = launch(launch_server, "hermes-agent", tmp_path)
    assert not (tmp_path / ".hermes").exists()  # printing writes nothing
    assert "refuses less than 65536 tokens" in done.stdout  # this server has 1024
    launch(launch_server, "hermes-agent", tmp_path, "--write")
    model = yaml.safe_load((tmp_path / ".hermes" / "config.yaml").read_text())["model"]
    assert model["provider"] == "custom" and model["default"] == MODEL_ID and model["api_key"] == KEY
    client = openai.OpenAI(base_url=model["base_url"], api_key=model["api_key"], max_retries=0)
    assert client.models.retrieve(MODEL_ID).model_dump()["context_length"] == CTX


def test_a_wrong_key_is_one_line(launch_server: ServerProcess, tmp_path: Path) -> None:
    args = ("--url", launch_server.base_url, "--api-key", "wrong", "--home", str(tmp_path), "--write")
    done = subprocess.run(hermesd_cmd("launch", "codex", *args), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith(f"hermesd: error: hermesd at {launch_server.base_url} refused the API key")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / ".codex").exists()
