"""`hermesd launch`: what it asks the daemon (over httpx's MockTransport), how it merges into each
client's file without losing what the user had, its backups, and its one-line errors. The real
daemon and real clients are in tests/e2e/test_launch_e2e.py and test_hermes_agent_e2e.py."""

from __future__ import annotations

import json
import socket
import stat
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner

from hermesd.cli import launch
from hermesd.cli.chat import DaemonAPI
from hermesd.cli.launch import (
    ConfigFile,
    LaunchError,
    Served,
    discover,
    launch_command,
    toml_merge,
    write_config,
)

URL = "http://127.0.0.1:9"
ENTRY = {"object": "model", "owned_by": "hermesd", "context_length": 65536, "max_model_len": 65536}


def daemon(models: list[dict[str, Any]], alias: str | None = None) -> DaemonAPI:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": models})
        name = path.removeprefix("/v1/models/")
        if name == launch.CLAUDE_PROBE and alias:
            return httpx.Response(200, json={**ENTRY, "id": alias})
        for m in models:
            if m["id"] == name:
                return httpx.Response(200, json=m)
        return httpx.Response(404, json={"error": {"message": f"no model {name}", "code": "model_not_found"}})

    return DaemonAPI(URL, "k", transport=httpx.MockTransport(handler))


def served(**kw: Any) -> Served:
    base = dict(url=URL, api_key="sk-1", model="hermes-4-14b", context=65536, claude_alias=None)
    return Served(**{**base, **kw})  # type: ignore[arg-type]


def test_discover_takes_the_base_model_and_its_context() -> None:
    api = daemon([{**ENTRY, "id": "hermes-4-14b"}, {**ENTRY, "id": "hermes-4-14b:ad", "parent": "x"}])
    s = discover(api, None)
    assert (s.model, s.context, s.api_key, s.claude_alias) == ("hermes-4-14b", 65536, "k", None)


def test_discover_sees_a_claude_alias_and_an_asked_model() -> None:
    api = daemon([{**ENTRY, "id": "a"}, {**ENTRY, "id": "b", "context_length": 8192}], alias="a")
    s = discover(api, "b")
    assert (s.model, s.context, s.claude_alias) == ("b", 8192, "a")
    with pytest.raises(launch.DaemonError, match="no model nope"):
        discover(api, "nope")


def test_discover_with_no_model() -> None:
    with pytest.raises(LaunchError, match="serves no model"):
        discover(daemon([]), None)


def test_hermes_agent_merges_into_the_users_config(tmp_path: Path) -> None:
    old_model = {"default": "x", "api_mode": "codex_responses", "context_length": 4096}
    old = {"model": old_model, "agent": {"a": 1}}
    (file,) = launch.hermes_agent(served(), tmp_path).files
    assert file.path == tmp_path / ".hermes" / "config.yaml"
    merged = yaml.safe_load(file.merge(yaml.safe_dump(old)))
    assert merged["agent"] == {"a": 1}
    assert merged["model"] == {
        "default": "hermes-4-14b",
        "provider": "custom",
        "base_url": f"{URL}/v1",
        "api_key": "sk-1",
    }  # an old endpoint's api_mode and context_length would override what hermesd says
    assert yaml.safe_load(file.merge(None)) == yaml.safe_load(file.fragment)
    with pytest.raises(LaunchError, match="not valid YAML"):
        file.merge("model: [")


def test_hermes_agent_is_warned_below_64k() -> None:
    notes = " ".join(launch.hermes_agent(served(context=8192), None).notes)
    assert "--min-ctx 65536" in notes
    assert "--min-ctx" not in " ".join(launch.hermes_agent(served(), None).notes)


def test_claude_merges_its_env_and_says_whether_an_alias_is_set(tmp_path: Path) -> None:
    old = {"permissions": {"allow": ["Bash"]}, "env": {"DISABLE_TELEMETRY": "1", "ANTHROPIC_MODEL": "old"}}
    plan = launch.claude(served(), tmp_path)
    (file,) = plan.files
    merged = json.loads(file.merge(json.dumps(old)))
    assert merged["permissions"] == old["permissions"]
    assert merged["env"]["DISABLE_TELEMETRY"] == "1"
    assert merged["env"]["ANTHROPIC_BASE_URL"] == URL  # Claude Code adds /v1/messages itself
    assert merged["env"]["ANTHROPIC_AUTH_TOKEN"] == "sk-1"
    env = merged["env"]
    assert env["ANTHROPIC_MODEL"] == env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == "hermes-4-14b"
    assert "--model-alias 'claude-*=hermes-4-14b'" in " ".join(plan.notes)
    aliased = launch.claude(served(claude_alias="hermes-4-14b", api_key=None), tmp_path)
    assert "--model-alias 'claude" not in " ".join(aliased.notes)
    env = json.loads(aliased.files[0].merge(None))["env"]
    assert env["ANTHROPIC_AUTH_TOKEN"] == launch.NO_KEY  # without any, Claude Code asks to log in
    for bad in ("{", "[]", '{"env": []}'):
        with pytest.raises(LaunchError):
            file.merge(bad)


CODEX_OLD = """# my settings
approval_policy = "on-request"
model = "gpt-5"   # the old one

[model_providers.hermesd]
name = "stale"
base_url = "http://old/v1"

[model_providers.hermesd.http_headers]
X = "y"

[mcp_servers.docs]
command = "docs-server"  # kept
"""


def test_codex_sets_root_keys_and_replaces_its_table_keeping_the_rest(tmp_path: Path) -> None:
    (file,) = launch.codex(served(), tmp_path).files
    text = file.merge(CODEX_OLD)
    parsed = tomllib.loads(text)
    assert parsed["model"] == "hermes-4-14b"
    assert parsed["model_provider"] == "hermesd"
    assert parsed["model_context_window"] == 65536
    assert parsed["approval_policy"] == "on-request"
    assert parsed["mcp_servers"] == {"docs": {"command": "docs-server"}}
    assert parsed["model_providers"] == {
        "hermesd": {
            "name": "hermesd",
            "base_url": f"{URL}/v1",
            "wire_api": "responses",
            "env_key": "HERMESD_API_KEY",
        }
    }
    assert "# my settings" in text and "# kept" in text  # the user's comments stay
    assert file.merge(text) == text  # a second launch changes nothing
    assert tomllib.loads(file.merge(None)) == tomllib.loads(file.fragment)


def test_codex_without_a_key_names_no_variable() -> None:
    plan = launch.codex(served(api_key=None), None)
    assert plan.env == []
    assert "env_key" not in tomllib.loads(plan.files[0].fragment)["model_providers"]["hermesd"]


@pytest.mark.parametrize(
    "text",
    [
        "model = [",  # not TOML
        'model_providers.hermesd.name = "x"\n',  # a dotted key the table would clash with
        "model_providers = { hermesd = { name = 'x' } }\n",
    ],
)
def test_codex_refuses_what_it_cannot_merge_safely(text: str) -> None:
    with pytest.raises(LaunchError):
        toml_merge(text, {"model": "m"}, "[model_providers.hermesd]", {"name": "hermesd"}, Path("c.toml"))


def test_open_webui_env() -> None:
    plan = launch.open_webui(served(), Path("/h"))
    assert dict(plan.env) == {"OPENAI_API_BASE_URL": f"{URL}/v1", "OPENAI_API_KEY": "sk-1"}
    assert plan.files[0].path == Path("/h/.config/hermesd/open-webui.env")


def test_client_folders_follow_their_own_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HERMES_HOME", str(tmp_path / "hh"))
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "ch"))
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "cc"))
    assert launch.hermes_agent(served(), None).files[0].path == tmp_path / "hh" / "config.yaml"
    assert launch.codex(served(), None).files[0].path == tmp_path / "ch" / "config.toml"
    assert launch.claude(served(), None).files[0].path == tmp_path / "cc" / "settings.json"
    # --home wins: tests and other users' homes
    assert launch.codex(served(), tmp_path).files[0].path == tmp_path / ".codex" / "config.toml"


def test_write_backs_up_what_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "conf"
    file = ConfigFile(path, "", lambda old: (old or "") + "+")
    assert write_config(file, "S") == f"wrote {path}"
    assert path.read_text() == "+"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds a key
    path.chmod(0o640)
    assert "the old one is in" in write_config(file, "S")
    assert (tmp_path / "sub" / "conf.bak-S").read_text() == "+"
    assert path.read_text() == "++"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    write_config(file, "S")  # same stamp: a second backup does not overwrite the first
    assert (tmp_path / "sub" / "conf.bak-S-1").read_text() == "++"
    same = ConfigFile(path, "", lambda old: old or "")
    assert "left as it was" in write_config(same, "T")
    assert not (tmp_path / "sub" / "conf.bak-T").exists()


def test_a_bad_file_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text("{ not json")
    (file,) = launch.claude(served(), tmp_path).files
    with pytest.raises(LaunchError):
        write_config(ConfigFile(path, file.fragment, file.merge), "S")
    assert path.read_text() == "{ not json"
    assert list(tmp_path.iterdir()) == [path]


def test_no_daemon_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    args = ["codex", "--url", url, "--api-key", "k", "--home", str(tmp_path)]
    result = CliRunner().invoke(launch_command, args)
    assert result.exit_code == 1
    assert result.output == f"hermesd: error: no hermesd is answering at {url} (is hermesd serve running?)\n"
    assert list(tmp_path.iterdir()) == []


def test_unknown_client_is_refused() -> None:
    result = CliRunner().invoke(launch_command, ["vim", "--url", URL, "--api-key", "k"])
    assert result.exit_code == 2
    assert "hermes-agent" in result.output and "Traceback" not in result.output
