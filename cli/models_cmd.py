"""`hermesd models`: the Hermes 4 (and other) GGUF models already in the Hugging Face cache."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from hermesd.cli.autoplan import load_catalog_or_fail
from hermesd.models.hub import HubEnv
from hermesd.models.local_models import list_local_models


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def models_command(as_json: bool) -> None:
    """List local GGUF files (HF_HOME / HF_HUB_CACHE) with size, variant and quant."""
    catalog = load_catalog_or_fail()
    env = HubEnv.from_environ()
    models = list_local_models(catalog, env.cache_dir)
    if as_json:
        doc = [
            {
                "variant": m.variant,
                "quant": m.quant,
                "repo": m.repo,
                "commit": m.commit,
                "refs": list(m.refs),
                "path": str(m.first),
                "files": [str(p) for p in m.paths],
                "size_bytes": m.size_bytes,
                "complete": m.complete,
            }
            for m in models
        ]
        click.echo(json.dumps(doc, indent=2))
        return
    console = Console(soft_wrap=True)
    if not models:
        console.print(f"no GGUF models in {env.cache_dir} (fetch one with `hermesd pull`)")
        return
    table = Table(title=f"Local models in {env.cache_dir}", title_justify="left")
    for col in ("variant", "quant", "size GB", "files", "repo", "path"):
        table.add_column(col, justify="right" if col in ("size GB", "files") else "left")
    for m in models:
        parts = f"{len(m.paths)}/{m.parts_expected}" + ("" if m.complete else " INCOMPLETE")
        table.add_row(
            m.variant or "-", m.quant or "?", f"{m.size_bytes / 1e9:.2f}", parts, m.repo, str(m.first)
        )
    console.print(table)
