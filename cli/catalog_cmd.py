"""`hermesd catalog show|refresh`: the Hermes 4 files hermesd knows, and updating them from the hub."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from hermesd.cli.autoplan import load_catalog_or_fail
from hermesd.models.catalog import default_overlay_path, weight_layout, write_overlay
from hermesd.models.hub import HubEnv, refresh_catalog


@click.group("catalog")
def catalog_group() -> None:
    """The catalog of Hermes 4 variants, quants and GGUF files."""


@catalog_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def show_command(as_json: bool) -> None:
    """List every variant and quant with its repo, files and size (and how firm the size is)."""
    catalog = load_catalog_or_fail()
    rows: list[dict[str, Any]] = []
    for v in catalog.ordered():
        for q in v.quants:
            size = q.known_size() or weight_layout(v, q, catalog.quant_types[q.quant]).total
            rows.append(
                {
                    "variant": v.id,
                    "quant": q.quant,
                    "repo": q.repo,
                    "files": [f.path for f in q.files],
                    "size_bytes": size,
                    "size_kind": q.size_kind,
                    "names_verified": q.names_verified,
                    "revision": q.revision,
                }
            )
    drafts: list[dict[str, Any]] = [
        {
            "draft": d.id,
            "for": [v.id for v in catalog.ordered() if v.draft == d.id],
            "quant": d.quants[0].quant,
            "repo": d.quants[0].repo,
            "files": [f.path for f in d.quants[0].files],
            "size_bytes": d.quants[0].known_size()
            or weight_layout(d, d.quants[0], catalog.quant_types[d.quants[0].quant]).total,
            "size_kind": d.quants[0].size_kind,
        }
        for d in catalog.drafts.values()
    ]
    if as_json:
        out = {"refreshed_at": catalog.refreshed_at, "entries": rows, "drafts": drafts}
        click.echo(json.dumps(out, indent=2))
        return
    table = Table(
        title="Hermes 4 catalog" + (f" (refreshed {catalog.refreshed_at})" if catalog.refreshed_at else "")
    )
    for col in ("variant", "quant", "size GB", "size is", "files", "repo"):
        table.add_column(col, justify="right" if col in ("size GB", "files") else "left")
    for r in rows:
        files = str(len(r["files"])) if r["files"] else "?"
        table.add_row(
            r["variant"], r["quant"], f"{r['size_bytes'] / 1e9:.1f}", r["size_kind"], files, r["repo"]
        )
    console = Console(soft_wrap=True)
    console.print(table)
    drafts_table = Table(title="Draft models (serve --draft-model auto)")
    for col in ("draft", "for", "quant", "size GB", "size is", "repo"):
        drafts_table.add_column(col, justify="right" if col == "size GB" else "left")
    for d in drafts:
        drafts_table.add_row(
            d["draft"],
            ", ".join(d["for"]),
            d["quant"],
            f"{d['size_bytes'] / 1e9:.1f}",
            d["size_kind"],
            d["repo"],
        )
    console.print(drafts_table)


@catalog_group.command("refresh")
def refresh_command() -> None:
    """Read file names, sizes and sha256 of every catalog repo from the hub (HF_ENDPOINT, HF_TOKEN)."""
    catalog = load_catalog_or_fail()
    env = HubEnv.from_environ()
    if env.offline:
        raise click.ClickException("catalog refresh needs the hub, and offline mode is on (HF_HUB_OFFLINE)")
    entries, failures = refresh_catalog(catalog, env)
    for failure in failures:
        click.echo(f"warning: {failure}", err=True)
    if not entries:
        raise click.ClickException(f"nothing refreshed from {env.endpoint}")
    path = default_overlay_path()
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    write_overlay(path, entries, stamp)
    known = sum(len(v.quants) for v in catalog.variants)
    click.echo(f"refreshed {len(entries)} of {known} catalog entries from {env.endpoint}; wrote {path}")
    for e in entries:
        size = sum(f.size or 0 for f in e.files)
        click.echo(
            f"  {e.variant} {e.quant}: {len(e.files)} file(s), {size / 1e9:.2f} GB at {e.revision[:12]}"
        )
