"""`hermesd ps`: what the running daemon serves and how busy it is, from its `GET /v1/status`
(server/routes/status.py): the model, its loaded adapters, slots busy and waiting, the context per
slot, memory per device and uptime; as tables, or the endpoint's JSON with `--json`."""

from __future__ import annotations

import json
from typing import Any

import click

from hermesd.cli.chat import DaemonError, connect, user_daemon_options
from hermesd.cli.daemon_address import fail


def duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {s:02d}s"
    return f"{minutes}m {s:02d}s" if minutes else f"{s}s"


def size(n: int) -> str:
    """Bytes for people: MiB below a GiB (the tiny and small models), GiB above."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def summary_rows(status: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, value) lines of the status: the first table of `hermesd ps`."""
    rows = [("status", str(status.get("status", "?")))]
    if status.get("error"):
        rows.append(("error", str(status["error"])))
    model = status.get("model")
    if isinstance(model, dict):
        others = [i for i in model.get("ids", []) if i != model.get("id")]
        rows.append(("model", str(model.get("id")) + (f" (also {', '.join(others)})" if others else "")))
        facts = [str(model.get("file", ""))]
        if model.get("n_params"):
            n = int(model["n_params"])
            facts.append(f"{n / 1e9:.1f}B parameters" if n >= 1e9 else f"{n / 1e6:.1f}M parameters")
        if model.get("size_bytes"):
            facts.append(size(int(model["size_bytes"])))
        rows.append(("file", ", ".join(f for f in facts if f)))
    adapters = status.get("adapters")
    if adapters is not None:
        names = [f"{a.get('name')} (model {a.get('id')})" for a in adapters if isinstance(a, dict)]
        rows.append(("adapters", ", ".join(names) if names else "none loaded"))
    slots = status.get("slots")
    if isinstance(slots, dict):
        busy, waiting, total = slots.get("busy", 0), slots.get("waiting", 0), slots.get("total")
        rows.append(("slots", f"{busy} busy, {waiting} waiting, {total} in all"))
    context = status.get("context")
    if isinstance(context, dict):
        rows.append(
            ("context", f"{context.get('per_slot')} tokens per slot (trained: {context.get('trained')})")
        )
    rows.append(("uptime", duration(float(status.get("uptime_s", 0)))))
    rows.append(("version", str(status.get("version", "?"))))
    return rows


def device_rows(status: dict[str, Any]) -> list[tuple[str, ...]]:
    """(device, kind, layers, model, KV, compute, total) per device: the second table."""
    out = []
    for d in status.get("devices") or []:
        if isinstance(d, dict):
            out.append(
                (
                    str(d.get("name")),
                    str(d.get("kind")),
                    str(d.get("layers")),
                    *(
                        size(int(d.get(k, 0)))
                        for k in ("model_bytes", "kv_bytes", "compute_bytes", "total_bytes")
                    ),
                )
            )
    return out


def render(status: dict[str, Any], url: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    summary = Table(title=f"hermesd at {url}", title_justify="left", show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    for what, value in summary_rows(status):
        summary.add_row(what, value)
    console.print(summary)
    devices = device_rows(status)
    if devices:
        table = Table(title="memory per device", title_justify="left")
        for col in ("device", "kind", "layers", "model", "KV cache", "compute", "total"):
            table.add_column(col, justify="left" if col in ("device", "kind") else "right")
        for row in devices:
            table.add_row(*row)
        console.print(table)


@click.command("ps")
@user_daemon_options
@click.option("--json", "as_json", is_flag=True, help="print the daemon's status as JSON")
def ps_command(url: str | None, api_key: str | None, as_json: bool) -> None:
    """Show what the running daemon serves: model, adapters, slots, context, memory, uptime."""
    api = connect(url, api_key)
    try:
        status = api.get("/v1/status")
    except DaemonError as exc:
        fail(str(exc))
    finally:
        api.close()
    if as_json:
        click.echo(json.dumps(status, indent=2))
    else:
        render(status, api.url)
