"""`hermesd adapters list|load|unload|rm`: the local adapter store and the running daemon's set."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from hermesd.cli.daemon_address import fail, local_defaults
from hermesd.models.store import AdapterStore, StoreError, check_name
from hermesd.runtime.tune.daemon import (
    ADMIN_KEY_ENV,
    URL_ENV,
    DaemonClient,
    DaemonError,
    DaemonUnreachable,
)

F = TypeVar("F", bound=Callable[..., Any])


def daemon_options(fn: F) -> F:
    """--state-dir, --serve-url, --api-key: shared by `tune` and `adapters`."""
    fn = click.option(
        "--api-key",
        envvar=ADMIN_KEY_ENV,
        default=None,
        help=f"admin API key of the daemon (also {ADMIN_KEY_ENV}; default: the first one in its settings)",
    )(fn)
    fn = click.option(
        "--serve-url",
        envvar=URL_ENV,
        default=None,
        help=f"URL of the running hermesd (also {URL_ENV}; default: host and port from its settings)",
    )(fn)
    fn = click.option(
        "--state-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="hermesd state folder holding the adapter store (default: the daemon's)",
    )(fn)
    return fn


def checked_name(name: str) -> str:
    """The adapter name, or exit with the message the daemon would give for it."""
    try:
        return check_name(name)
    except StoreError as exc:
        fail(str(exc))


def resolve(state_dir: Path | None, serve_url: str | None, api_key: str | None) -> tuple[Path, DaemonClient]:
    need_defaults = state_dir is None or serve_url is None or api_key is None
    defaults = local_defaults() if need_defaults else None
    state = state_dir or (defaults.state_dir if defaults else Path("."))
    url = serve_url or (defaults.serve_url if defaults else "")
    key = api_key or (defaults.admin_key if defaults else None)
    return state, DaemonClient(url, key)


@click.group("adapters")
def adapters_group() -> None:
    """Manage LoRA adapters: the local store and what the running daemon has loaded."""


@adapters_group.command("list")
@daemon_options
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def list_command(state_dir: Path | None, serve_url: str | None, api_key: str | None, as_json: bool) -> None:
    """List registered adapters and whether the daemon has them loaded."""
    state, client = resolve(state_dir, serve_url, api_key)
    rows = _store_rows(AdapterStore(state))
    daemon_note = ""
    try:
        served = {a.get("name"): a for a in client.list_adapters()}
    except DaemonUnreachable as exc:
        served, daemon_note = {}, f"({exc}: loaded state unknown)"
        for row in rows.values():
            row["loaded"] = None
    except DaemonError as exc:
        fail(str(exc))
    else:
        for name, entry in served.items():
            row = rows.setdefault(str(name), {"name": name, "path": entry.get("path"), "base": None})
            row["loaded"] = bool(entry.get("loaded"))
            row["id"] = entry.get("id")
        for row in rows.values():
            row.setdefault("loaded", False)
    if as_json:
        click.echo(json.dumps(list(rows.values()), indent=2))
        return
    _print_table(list(rows.values()), daemon_note)


def _store_rows(store: AdapterStore) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for record in store.list():
        metrics = record.manifest.get("metrics", {})
        lora = record.manifest.get("lora", {})
        rows[record.name] = {
            "name": record.name,
            "path": str(record.path),
            "base": record.manifest.get("base", {}).get("name"),
            "base_fingerprint": record.base_fingerprint,
            "rank": lora.get("rank"),
            "eval_loss_after": metrics.get("eval_loss_after"),
        }
    return rows


def _print_table(rows: list[dict[str, Any]], note: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    if not rows:
        console.print("no adapters registered" + (f" {note}" if note else ""))
        return
    table = Table("name", "loaded", "model id", "base", "rank", "eval loss", "file")
    for row in rows:
        loaded = {True: "yes", False: "no", None: "?"}[row.get("loaded")]
        loss = row.get("eval_loss_after")
        table.add_row(
            str(row["name"]),
            loaded,
            str(row.get("id") or ""),
            str(row.get("base") or ""),
            str(row.get("rank") or ""),
            f"{loss:.4f}" if isinstance(loss, float) else "",
            str(row.get("path") or ""),
        )
    console.print(table)
    if note:
        console.print(note)


@adapters_group.command("load")
@click.argument("name")
@daemon_options
def load_command(name: str, state_dir: Path | None, serve_url: str | None, api_key: str | None) -> None:
    """Load a registered adapter into the running daemon (no restart)."""
    checked_name(name)
    _, client = resolve(state_dir, serve_url, api_key)
    try:
        result = client.load(name)
    except DaemonError as exc:
        fail(str(exc))
    model_id = result.get("id") or name
    click.echo(f"loaded {name}: clients can now use model {model_id!r}")


@adapters_group.command("unload")
@click.argument("name")
@daemon_options
def unload_command(name: str, state_dir: Path | None, serve_url: str | None, api_key: str | None) -> None:
    """Unload an adapter from the running daemon (it stays registered)."""
    checked_name(name)
    _, client = resolve(state_dir, serve_url, api_key)
    try:
        client.unload(name)
    except DaemonError as exc:
        fail(str(exc))
    click.echo(f"unloaded {name}")


@adapters_group.command("rm")
@click.argument("name")
@daemon_options
@click.option("--force", is_flag=True, help="unload it from the daemon first if it is loaded")
def rm_command(
    name: str, state_dir: Path | None, serve_url: str | None, api_key: str | None, force: bool
) -> None:
    """Remove an adapter from the store."""
    checked_name(name)
    state, client = resolve(state_dir, serve_url, api_key)
    store = AdapterStore(state)
    try:
        if not store.exists(name):
            fail(f"no adapter named {name!r} in {store.root}")
    except StoreError as exc:
        fail(str(exc))
    try:
        loaded = any(a.get("name") == name and a.get("loaded") for a in client.list_adapters())
    except DaemonUnreachable:
        loaded = False  # no daemon: nothing holds the file
    except DaemonError as exc:
        fail(str(exc))
    if loaded:
        if not force:
            fail(f"adapter {name!r} is loaded in the daemon at {client.url}; unload it first or pass --force")
        try:
            client.unload(name)
        except DaemonError as exc:
            fail(str(exc))
    try:
        store.remove(name)
    except StoreError as exc:
        fail(str(exc))
    click.echo(f"removed {name}")
