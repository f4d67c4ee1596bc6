"""`hermesd pull [VARIANT[:QUANT]]`: download a Hermes 4 GGUF (all shards) into the HF cache."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from hermesd.cli.autoplan import (
    UsageFailure,
    engine_access,
    fetch,
    load_catalog_or_fail,
    load_hardware,
    make_plan,
)
from hermesd.cli.download_progress import RichDownloadProgress
from hermesd.cli.hardware_option import hardware_option
from hermesd.models.catalog import CatalogError, parse_model_ref
from hermesd.models.hub import HubEnv, first_file
from hermesd.runtime.engine.context_settings import KV_TYPE_NAMES


@click.command("pull")
@click.argument("model_ref", metavar="[VARIANT[:QUANT]]", required=False)
@hardware_option("plan for this hardware profile instead of this machine")
@click.option(
    "--ctx", type=click.IntRange(256), default=None, help="context the plan must fit (default 16384)"
)
@click.option("--parallel", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--kv-type", type=click.Choice(KV_TYPE_NAMES), default="f16", show_default=True)
@click.option("--prefer", type=click.Choice(["quality", "speed"]), default="quality", show_default=True)
@click.option("--offline", is_flag=True, help="only check the local cache (also HF_HUB_OFFLINE=1)")
@click.option(
    "--draft", is_flag=True, help="also fetch the catalog's draft model for it (serve --draft-model auto)"
)
def pull_command(
    model_ref: str | None,
    hardware_file: Path | None,
    ctx: int | None,
    parallel: int,
    kv_type: str,
    prefer: str,
    offline: bool,
    draft: bool,
) -> None:
    """Download a Hermes 4 GGUF, every shard, sha256-checked. Without VARIANT[:QUANT], what
    `hermesd plan` picks for this machine (or for --hardware)."""
    catalog = load_catalog_or_fail()
    env = HubEnv.from_environ(offline=offline)
    err = Console(stderr=True, soft_wrap=True)
    variant = quant = None
    if model_ref:
        try:
            variant, quant = parse_model_ref(model_ref, catalog)
        except CatalogError as exc:
            raise UsageFailure(str(exc)) from exc
    if quant is None:
        hw = load_hardware(hardware_file)
        # the file `serve` would load: planned for the GPUs the engine can use (as `plan` does)
        access = engine_access(hw, real_engine=False)
        if access is not None and access.blocked:
            err.print(access.banner(), markup=False)
        chosen = make_plan(
            catalog,
            access.planning_hardware() if access is not None else hw,
            env,
            variant=variant,
            quant=None,
            ctx=ctx,
            parallel=parallel,
            kv_type=kv_type,
            prefer=prefer,
        )
        variant, quant = chosen.variant, chosen.quant
        err.print(f"plan for {hw.source}: [bold]{variant} {quant}[/bold]", soft_wrap=True)
    v = catalog.variant(variant or "")
    entry = v.quant(quant) if v and quant else None
    if entry is None:
        raise UsageFailure(f"{variant} {quant} is not in the catalog")
    err.print(f"fetching {entry.repo} ({entry.quant}) into {env.cache_dir}")
    with RichDownloadProgress(err) as progress:
        paths = fetch(entry, env, progress)
    size = sum(p.stat().st_size for p in paths)
    click.echo(f"{variant}:{quant}: {len(paths)} file(s), {size / 1e9:.2f} GB, verified")
    click.echo(str(first_file(paths)))
    if draft:
        assert v is not None
        model = catalog.drafts.get(v.draft)
        if model is None:
            raise UsageFailure(f"the catalog has no draft model for {v.id}")
        d_entry = model.quants[0]
        err.print(f"fetching the draft model {d_entry.repo} ({d_entry.quant}) into {env.cache_dir}")
        with RichDownloadProgress(err) as progress:
            d_paths = fetch(d_entry, env, progress)
        click.echo(f"draft {model.id}:{d_entry.quant}: verified")
        click.echo(str(first_file(d_paths)))
