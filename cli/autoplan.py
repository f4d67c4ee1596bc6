"""The pieces `plan`, `pull` and `serve` share: hardware, local layouts, planning, fetching.

`choose_model_for_serve` is what `hermesd serve` with no --model calls: plan for this machine,
use the cached files or download them, and return the path to give llama.cpp with the plan whose
n_gpu_layers / tensor_split / context / parallel / flash_attn / kv_type serve applies.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import click
from rich.console import Console

from hermesd.cli.download_progress import RichDownloadProgress
from hermesd.models.catalog import Catalog, CatalogError, QuantEntry, WeightLayout, load_catalog
from hermesd.models.gguf_info import GgufError, read_gguf_info
from hermesd.models.hub import (
    DownloadProgress,
    HubEnv,
    HubError,
    cached_files,
    ensure_local,
    first_file,
    verify_cached,
)
from hermesd.models.local_models import list_local_models
from hermesd.runtime.gpu_access import GpuAccess, gpu_access, simulated_engine
from hermesd.runtime.hardware import (
    Hardware,
    HardwareProfileError,
    Worker,
    address_problem,
    discover,
    load_profile,
    worker_from_profile,
)
from hermesd.runtime.planner import DraftRequest, NoFit, Plan, PlanError, PlanRequest, Prefer, plan

log = logging.getLogger("hermesd.plan")
WORKER_QUERY_TIMEOUT_S = 5.0


class UsageFailure(click.ClickException):
    """Bad input (profile, variant, option): exit status 2, like click's usage errors."""

    exit_code = 2


class NothingFits(click.ClickException):
    """The planner refused: exit status 1 with its reason."""

    exit_code = 1

    def __init__(self, result: NoFit) -> None:
        super().__init__(result.reason)
        self.result = result


def load_hardware(
    hardware_file: Path | None,
    worker_profiles: Sequence[Path] = (),
    worker_addresses: Sequence[str] = (),
) -> Hardware:
    """This machine (or its --hardware profile) with the llama.cpp RPC workers: the live ones
    (`--worker`, asked for their devices) first, then the profiled ones, in the order given."""
    if hardware_file is None:
        hw = discover()
        for note in hw.notes:
            log.info("hardware: %s", note)
    else:
        try:
            hw = load_profile(hardware_file)
        except HardwareProfileError as exc:
            raise UsageFailure(str(exc)) from exc
    workers = [*(query_live_worker(a) for a in worker_addresses)]
    for path in worker_profiles:
        try:
            workers.append(worker_from_profile(path))
        except HardwareProfileError as exc:
            raise UsageFailure(str(exc)) from exc
    seen: set[str] = set()
    for w in workers:
        if w.address in seen:
            raise UsageFailure(f"worker {w.address} is given twice")
        seen.add(w.address)
    return replace(hw, workers=tuple(workers)) if workers else hw


def query_live_worker(address: str) -> Worker:
    """Ask a running `hermesd worker` for its devices; a one-line error naming it when it cannot."""
    problem = address_problem(address)
    if problem:
        raise UsageFailure(f"--worker {address}: {problem}")
    from hermesd.runtime.rpc import WorkerError, query_worker  # only when a live worker is named

    try:
        return query_worker(address, WORKER_QUERY_TIMEOUT_S)
    except WorkerError as exc:  # its message names the worker and says why
        raise click.ClickException(str(exc)) from exc


def engine_access(hw: Hardware, *, real_engine: bool) -> GpuAccess | None:
    """Which of `hw`'s GPUs the engine can use. `serve` and `doctor` always ask the engine this
    process loads (`real_engine`), also for a --hardware profile; `plan` asks it for this machine and
    takes a profile's `engine` section for a profile (None without one: its GPUs count as usable)."""
    if real_engine or hw.source == "discovered":
        from hermesd.runtime.engine.capabilities import probe_capabilities

        return gpu_access(hw, probe_capabilities())
    simulated = simulated_engine(hw)
    return None if simulated is None else gpu_access(hw, simulated)


def load_catalog_or_fail() -> Catalog:
    try:
        return load_catalog()
    except CatalogError as exc:
        raise UsageFailure(str(exc)) from exc


def local_layouts(catalog: Catalog, env: HubEnv) -> dict[tuple[str, str], WeightLayout]:
    """Exact per-layer sizes of every complete catalog model in the HF cache."""
    out: dict[tuple[str, str], WeightLayout] = {}
    for m in list_local_models(catalog, env.cache_dir):
        if not (m.complete and m.variant and m.quant) or (m.variant, m.quant) in out:
            continue
        variant = catalog.variant(m.variant)
        try:
            layout = read_gguf_info(m.first).layout()
        except GgufError as exc:
            log.warning("ignoring local file %s: %s", m.first, exc)
            continue
        if variant is None or len(layout.layer_bytes) != variant.layers:
            log.warning("ignoring local file %s: its layer count does not match %s", m.first, m.variant)
            continue
        out[(m.variant, m.quant)] = layout
    return out


def make_plan(
    catalog: Catalog,
    hw: Hardware,
    env: HubEnv,
    *,
    variant: str | None,
    quant: str | None,
    ctx: int | None,
    parallel: int | None,
    kv_type: str,
    prefer: str,
    min_ctx: int | None = None,
    kv_fallback: tuple[str, ...] = (),
    draft: DraftRequest | None = None,
) -> Plan:
    request = PlanRequest(
        variant=variant,
        quant=quant,
        ctx=ctx,
        min_ctx=min_ctx,
        kv_fallback=kv_fallback,
        parallel=parallel,
        kv_type=kv_type,
        prefer=cast(Prefer, prefer),  # checked by the planner
        local_layouts=local_layouts(catalog, env),
        draft=draft,
    )
    try:
        result = plan(hw, catalog, request)
    except PlanError as exc:
        raise UsageFailure(str(exc)) from exc
    if isinstance(result, NoFit):
        raise NothingFits(result)
    return result


def draft_request(ref: str | None) -> DraftRequest | None:
    """--draft-model for the planner: `auto` (the catalog's draft of each variant), or a local
    file's own numbers."""
    if ref is None:
        return None
    if ref == "auto":
        return DraftRequest()
    path = Path(ref).expanduser()
    try:
        info = read_gguf_info(path)
    except (GgufError, OSError) as exc:
        raise UsageFailure(f"--draft-model {path}: {exc}") from exc
    return DraftRequest(model=info.as_variant(), layout=info.layout())


def entry_of(catalog: Catalog, p: Plan) -> QuantEntry:
    variant = catalog.variant(p.variant)
    entry = variant.quant(p.quant) if variant else None
    if entry is None:  # the planner only returns catalog entries
        raise UsageFailure(f"{p.variant} {p.quant} is not in the catalog")
    return entry


def fetch(entry: QuantEntry, env: HubEnv, progress: DownloadProgress | None) -> list[Path]:
    """The entry's files: from the cache when complete (no network), else downloaded."""
    try:
        paths = cached_files(entry, env)
        if paths is not None:
            verify_cached(paths, progress=progress)
            return paths
        return ensure_local(entry, env, progress=progress)
    except HubError as exc:
        raise click.ClickException(str(exc)) from exc


def choose_model_for_serve(
    *,
    hardware_file: Path | None,
    variant: str | None,
    quant: str | None,
    ctx: int | None,
    parallel: int | None,
    kv_type: str,
    prefer: str,
    offline: bool,
    console: Console,
    hardware: Hardware | None = None,
    min_ctx: int | None = None,
    kv_fallback: tuple[str, ...] = (),
    draft: DraftRequest | None = None,
) -> tuple[Path, Plan]:
    """Plan, fetch if needed, and return (first shard to load, plan). Raises click.ClickException
    (exit 1 when nothing fits or the download fails, 2 for bad input) with a one-line reason.

    Pass ctx=None unless the user set a context: the planner then starts at 16384 and may lower it.
    `hardware` (the machine as the engine can use it) replaces loading `hardware_file`.
    """
    catalog = load_catalog_or_fail()
    hw = hardware if hardware is not None else load_hardware(hardware_file)
    env = HubEnv.from_environ(offline=offline)
    options: dict[str, Any] = dict(
        ctx=ctx,
        parallel=parallel,
        kv_type=kv_type,
        prefer=prefer,
        min_ctx=min_ctx,
        kv_fallback=kv_fallback,
        draft=draft,
    )
    chosen = make_plan(catalog, hw, env, variant=variant, quant=quant, **options)
    entry = entry_of(catalog, chosen)
    with RichDownloadProgress(console) as progress:
        paths = fetch(entry, env, progress)
    if chosen.estimate.size_source != "gguf":
        # Now that the file is here, place it again with its real per-layer sizes.
        chosen = make_plan(catalog, hw, env, variant=chosen.variant, quant=chosen.quant, **options)
    for line in (*chosen.reasons, *chosen.arithmetic):
        log.info("plan: %s", line)
    log.info(
        "plan: %s %s, context %d x %d, n_gpu_layers %d, tensor_split %s, flash_attn %s",
        chosen.variant,
        chosen.quant,
        chosen.context,
        chosen.parallel,
        chosen.n_gpu_layers,
        list(chosen.tensor_split),
        chosen.flash_attn,
    )
    return first_file(paths), chosen
