"""`hermesd launch CLIENT`: the configuration that points a client people use at this daemon.

As `ollama launch` does for its clients: ask the running daemon what it serves (`/v1/models`: the
model id and the context per request), print the settings that client reads, and with `--write` put
them where it reads them. Each client keeps its own format, so each has a small writer that merges
hermesd's keys into the user's file and leaves everything else as it was; a file that changes is
first copied to `<file>.bak-<timestamp>`.

Where each client reads its settings (from the clients' own code and documentation):
- hermes-agent: `$HERMES_HOME/config.yaml` (default `~/.hermes`), `model:` with `provider: custom`,
  `base_url`, `default` and `api_key`; it finds the context itself from `/v1/models`
  (`agent.model_metadata`), and it no longer reads `OPENAI_BASE_URL`.
- Claude Code: the `env` object of `~/.claude/settings.json` (`$CLAUDE_CONFIG_DIR`):
  `ANTHROPIC_BASE_URL` (without `/v1`), `ANTHROPIC_AUTH_TOKEN`, `ANTHROPIC_MODEL` and the
  `ANTHROPIC_DEFAULT_{OPUS,SONNET,HAIKU}_MODEL` names its `/model` aliases and background tasks use.
- Codex: `~/.codex/config.toml` (`$CODEX_HOME`): `model`, `model_provider`, `model_context_window`
  and a `[model_providers.hermesd]` table with `wire_api = "responses"`; the key comes from the
  variable that `env_key` names.
- Open WebUI: its environment only (`OPENAI_API_BASE_URL`, `OPENAI_API_KEY`), kept in its own
  database after its first start; `--write` leaves an env file for `docker run --env-file`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from hermesd.cli.chat import DaemonAPI, DaemonError, connect, user_daemon_options
from hermesd.cli.daemon_address import fail

CLIENTS = ("hermes-agent", "claude", "codex", "open-webui")
# Hermes Agent refuses a model with less context than this (agent.model_metadata's minimum)
AGENT_MIN_CONTEXT = 65536
# a fixed name Claude Code sends; when it resolves, the daemon has a `claude-*` alias
CLAUDE_PROBE = "claude-sonnet-4-5"
PROVIDER_ID = "hermesd"  # the provider's name in Codex's config
CODEX_KEY_ENV = "HERMESD_API_KEY"  # the variable Codex reads the key from (hermesd chat reads it too)
NO_KEY = "hermesd"  # a placeholder where a client insists on some key and the daemon needs none


class LaunchError(Exception):
    """Something that stops the launch, worded as the one line the user sees."""


@dataclass(frozen=True)
class Served:
    """What the running daemon serves, as a client needs it."""

    url: str  # the daemon's root, without /v1
    api_key: str | None
    model: str
    context: int | None  # tokens per request (`context_length` of /v1/models)
    claude_alias: str | None  # the model `claude-sonnet-4-5` reaches, if an alias is set


def discover(api: DaemonAPI, model: str | None) -> Served:
    """Ask the daemon for its model (the first one it serves, or `model`) and its context."""
    listing = [m for m in api.get("/v1/models").get("data", []) if isinstance(m, dict)]
    if model is None:
        # adapters carry a `parent`: the base model is what a client should start with
        bases = [m for m in listing if not m.get("parent")] or listing
        if not bases:
            raise LaunchError(f"hermesd at {api.url} serves no model yet")
        entry = bases[0]
    else:
        entry = api.get(f"/v1/models/{model}")  # an alias or an adapter id resolves too
    context = entry.get("context_length")
    try:
        alias = api.get(f"/v1/models/{CLAUDE_PROBE}").get("id")
    except DaemonError:  # 404: no alias takes claude-* names
        alias = None
    return Served(
        url=api.url,
        api_key=api.api_key,
        model=model or str(entry["id"]),
        context=context if isinstance(context, int) else None,
        claude_alias=str(alias) if alias else None,
    )


@dataclass(frozen=True)
class ConfigFile:
    """One file a client reads: the part hermesd sets, and how to merge it into what is there."""

    path: Path
    fragment: str  # what hermesd sets, in the file's own format (printed)
    merge: Callable[[str | None], str]  # the file's text (None: no file yet) -> its new text


@dataclass
class Launch:
    files: list[ConfigFile] = field(default_factory=list)
    env: list[tuple[str, str]] = field(default_factory=list)  # variables the user exports
    notes: list[str] = field(default_factory=list)
    run: str = ""


def context_note(s: Served) -> str:
    return f"context: {s.context} tokens per request" if s.context else "context: not reported"


# -- hermes-agent ------------------------------------------------------------------------------


def hermes_agent(s: Served, home: Path | None) -> Launch:
    folder = _client_home(home, "HERMES_HOME", ".hermes")
    model: dict[str, Any] = {"provider": "custom", "base_url": f"{s.url}/v1", "default": s.model}
    if s.api_key:
        model["api_key"] = s.api_key

    def merge(text: str | None) -> str:
        config = _yaml_mapping(text, folder / "config.yaml")
        current = config.get("model")
        merged = dict(current) if isinstance(current, dict) else ({"default": current} if current else {})
        # an api_mode or context_length left from another endpoint would override what hermesd says
        for stale in ("api_mode", "context_length"):
            merged.pop(stale, None)
        merged.update(model)
        config["model"] = merged
        return _yaml_dump(config)

    notes = [f"{context_note(s)}; hermes-agent reads it from /v1/models"]
    if s.context is not None and s.context < AGENT_MIN_CONTEXT:
        notes.append(
            f"hermes-agent refuses less than {AGENT_MIN_CONTEXT} tokens of context: "
            f"restart the daemon with --min-ctx {AGENT_MIN_CONTEXT}"
        )
    return Launch(
        files=[ConfigFile(folder / "config.yaml", _yaml_dump({"model": model}), merge)],
        notes=notes,
        run="hermes",
    )


def _yaml_mapping(text: str | None, path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(text) if text else None
    except yaml.YAMLError as exc:
        raise LaunchError(f"{path} is not valid YAML ({_first_line(exc)}): fix it or move it away") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LaunchError(f"{path} does not hold a YAML mapping: fix it or move it away")
    return data


def _yaml_dump(data: dict[str, Any]) -> str:
    import yaml

    return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True))


# -- Claude Code -------------------------------------------------------------------------------


def claude(s: Served, home: Path | None) -> Launch:
    folder = _client_home(home, "CLAUDE_CONFIG_DIR", ".claude")
    env = {
        "ANTHROPIC_BASE_URL": s.url,  # Claude Code appends /v1/messages itself
        "ANTHROPIC_AUTH_TOKEN": s.api_key or NO_KEY,  # without one it asks to log in
        "ANTHROPIC_MODEL": s.model,
        "ANTHROPIC_DEFAULT_OPUS_MODEL": s.model,
        "ANTHROPIC_DEFAULT_SONNET_MODEL": s.model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": s.model,
    }

    def merge(text: str | None) -> str:
        path = folder / "settings.json"
        try:
            settings = json.loads(text) if text and text.strip() else {}
        except ValueError as exc:
            raise LaunchError(f"{path} is not valid JSON ({exc}): fix it or move it away") from None
        if not isinstance(settings, dict) or not isinstance(settings.get("env", {}), dict):
            raise LaunchError(f"{path} does not hold a JSON object with an `env` object: fix it first")
        settings["env"] = {**settings.get("env", {}), **env}
        return json.dumps(settings, indent=2, ensure_ascii=False) + "\n"

    if s.claude_alias:
        alias = f"names such as {CLAUDE_PROBE} reach {s.claude_alias} through the daemon's --model-alias"
    else:
        alias = (
            "Claude Code still sends fixed claude-* names for some calls: start the daemon with "
            f"--model-alias 'claude-*={s.model}' so they reach the model"
        )
    return Launch(
        files=[ConfigFile(folder / "settings.json", json.dumps({"env": env}, indent=2) + "\n", merge)],
        notes=[context_note(s), alias],
        run="claude",
    )


# -- Codex -------------------------------------------------------------------------------------


def codex(s: Served, home: Path | None) -> Launch:
    folder = _client_home(home, "CODEX_HOME", ".codex")
    root: dict[str, str | int] = {"model": s.model, "model_provider": PROVIDER_ID}
    if s.context:
        root["model_context_window"] = s.context
    provider: dict[str, str | int] = {"name": "hermesd", "base_url": f"{s.url}/v1", "wire_api": "responses"}
    if s.api_key:
        provider["env_key"] = CODEX_KEY_ENV
    header = f"[model_providers.{PROVIDER_ID}]"

    def merge(text: str | None) -> str:
        return toml_merge(text or "", root, header, provider, folder / "config.toml")

    fragment = [*_toml_lines(root), "", header, *_toml_lines(provider)]
    return Launch(
        files=[ConfigFile(folder / "config.toml", "\n".join(fragment) + "\n", merge)],
        env=[(CODEX_KEY_ENV, s.api_key)] if s.api_key else [],
        notes=[context_note(s)],
        run="codex",
    )


def toml_merge(
    text: str, root: dict[str, str | int], header: str, table: dict[str, str | int], path: Path
) -> str:
    """Set `root` keys and replace one `[table]` in a TOML file, leaving every other line as it was.

    No TOML writer is a dependency of hermesd (tomllib only reads), and a writer that parses and
    dumps would drop the user's comments; the edit is checked by reading the result back."""
    try:
        before = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LaunchError(f"{path} is not valid TOML ({exc}): fix it or move it away") from None
    lines = text.splitlines()
    first_table = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("[")), len(lines))
    keep: list[str] = []
    in_ours = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("["):
            name = stripped.split("#", 1)[0].strip()
            in_ours = name == header or name.startswith(header[:-1] + ".")  # with its sub-tables
        key = stripped.split("=", 1)[0].strip() if "=" in stripped else None
        if in_ours or (i < first_table and key in root):
            continue
        keep.append(line)
    first = next((i for i, ln in enumerate(keep) if ln.lstrip().startswith("[")), len(keep))
    head, tables = keep[:first], keep[first:]
    while head and not head[-1].strip():
        head.pop()
    body = head + _toml_lines(root) + ([""] if tables else []) + tables
    while body and not body[-1].strip():
        body.pop()
    new = "\n".join([*body, "", header, *_toml_lines(table)]).lstrip("\n") + "\n"
    try:
        after = tomllib.loads(new)
    except tomllib.TOMLDecodeError as exc:
        raise LaunchError(f"cannot merge into {path} ({exc}): add the printed lines by hand") from None
    expected = {k: v for k, v in before.items() if k not in root}
    expected.update(root)
    providers = dict(before.get("model_providers", {}))
    providers[header.strip("[]").split(".", 1)[1]] = table
    expected["model_providers"] = providers
    if after != expected:
        raise LaunchError(f"cannot merge into {path} safely: add the printed lines by hand")
    return new


def _toml_lines(values: dict[str, str | int]) -> list[str]:
    # a JSON string literal is a TOML basic string (same escapes)
    return [f"{k} = {v if isinstance(v, int) else json.dumps(v)}" for k, v in values.items()]


# -- Open WebUI --------------------------------------------------------------------------------


def open_webui(s: Served, home: Path | None) -> Launch:
    env = [("OPENAI_API_BASE_URL", f"{s.url}/v1"), ("OPENAI_API_KEY", s.api_key or NO_KEY)]
    path = (home or Path.home()) / ".config" / "hermesd" / "open-webui.env"
    text = "".join(f"{k}={v}\n" for k, v in env)
    return Launch(
        files=[ConfigFile(path, text, lambda _old: text)],
        env=env,
        notes=[
            context_note(s),
            "Open WebUI reads these only from its environment, and keeps them in its own database "
            "after its first start (change them later under Admin Settings > Connections)",
            f"with --write: docker run --network=host --env-file {path} ghcr.io/open-webui/open-webui:main",
        ],
        run="open-webui serve",
    )


BUILDERS: dict[str, Callable[[Served, Path | None], Launch]] = {
    "hermes-agent": hermes_agent,
    "claude": claude,
    "codex": codex,
    "open-webui": open_webui,
}


# -- writing -----------------------------------------------------------------------------------


def write_config(file: ConfigFile, stamp: str) -> str:
    """Merge into `file.path`; a file that changes is copied to `.bak-<stamp>` first.
    Returns what was done, as a line for the user."""
    try:
        old = file.path.read_text(encoding="utf-8") if file.path.exists() else None
    except (OSError, UnicodeDecodeError) as exc:
        raise LaunchError(f"cannot read {file.path}: {exc}") from None
    new = file.merge(old)
    if new == old:
        return f"{file.path} already says this: left as it was"
    backup = None
    try:
        file.path.parent.mkdir(parents=True, exist_ok=True)
        if old is not None:
            backup = _free_name(file.path.with_name(f"{file.path.name}.bak-{stamp}"))
            shutil.copy2(file.path, backup)
        _write_atomically(file.path, new)
    except OSError as exc:
        raise LaunchError(f"cannot write {file.path}: {exc}") from None
    return f"wrote {file.path}" + (f" (the old one is in {backup})" if backup else "")


def _free_name(path: Path) -> Path:
    n = 1
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f"{path.name}-{n}")
        n += 1
    return candidate


def _write_atomically(path: Path, text: str) -> None:
    # these files hold API keys: a new one is readable by its owner only, an old one keeps its mode
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(handle.name, mode)
    os.replace(handle.name, path)


def _client_home(home: Path | None, env: str, default: str) -> Path:
    """The client's folder: its own variable when the user set it, unless --home says otherwise."""
    if home is None and os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    return (home or Path.home()) / default


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# -- the command -------------------------------------------------------------------------------


@click.command("launch")
@click.argument("client", type=click.Choice(CLIENTS), metavar="CLIENT")
@user_daemon_options
@click.option("--model", default=None, help="model id or alias (default: the first one the daemon serves)")
@click.option("--write", is_flag=True, help="write it where the client reads it (merged, with backups)")
@click.option(
    "--home",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="home folder whose client settings to write (default: yours, or the client's own variable)",
)
def launch_command(
    client: str, url: str | None, api_key: str | None, model: str | None, write: bool, home: Path | None
) -> None:
    """Print the configuration that points CLIENT at this daemon; --write puts it in place.

    CLIENT is hermes-agent, claude (Claude Code), codex (Codex CLI) or open-webui.
    """
    api = connect(url, api_key)
    try:
        served = discover(api, model)
        launch = BUILDERS[client](served, home)
        done: list[str] = []
        if write:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            done = [write_config(f, stamp) for f in launch.files]
    except (DaemonError, LaunchError) as exc:
        fail(str(exc))
    finally:
        api.close()
    _print(client, served, launch, done)


def _print(client: str, s: Served, launch: Launch, done: list[str]) -> None:
    click.echo(f"{client} -> hermesd at {s.url} (model {s.model})")
    for key, value in launch.env:
        click.echo(f"export {key}={shlex.quote(value)}")
    for f in launch.files:
        click.echo(f"\n# {f.path}")
        click.echo(f.fragment.rstrip("\n"))
    click.echo("")
    for note in launch.notes:
        click.echo(f"# {note}")
    if done:
        for line in done:
            click.echo(line)
        click.echo(f"then run: {launch.run}")
    else:
        click.echo(f"write it with: hermesd launch {client} --write; then run: {launch.run}")
