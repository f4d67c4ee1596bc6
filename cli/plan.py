"""`hermesd plan`: which Hermes 4 this machine (or a --hardware profile) should run, and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from hermesd.cli.autoplan import (
    NothingFits,
    draft_request,
    engine_access,
    entry_of,
    load_catalog_or_fail,
    load_hardware,
    make_plan,
)
from hermesd.cli.hardware_option import hardware_option, workers_option
from hermesd.models.hub import HubEnv, cached_files, first_file
from hermesd.runtime.engine.context_settings import KV_TYPE_NAMES
from hermesd.runtime.gpu_access import GpuAccess
from hermesd.runtime.hardware import Hardware, to_profile_json
from hermesd.runtime.memory import GIB
from hermesd.runtime.plan_verify import VerifyReport, verify_plan
from hermesd.runtime.planner import Plan, engine_split, plan_to_json


def _gib(n: int) -> str:
    return f"{n / GIB:.2f}"


def render_hardware(console: Console, hw: Hardware) -> None:
    table = Table(title=f"Hardware ({hw.source})", title_justify="left")
    for col in ("device", "name", "total GiB", "free GiB", "bandwidth GB/s", "notes"):
        table.add_column(col, justify="right" if "GiB" in col or "GB/s" in col else "left")
    for g in hw.gpus:
        bw = g.bandwidth_gbps()
        note = f"compute {g.compute_capability}" if g.compute_capability else ""
        table.add_row(
            f"GPU {g.index}",
            g.name,
            f"{g.memory_total_mib / 1024:.2f}",
            f"{g.memory_free_mib / 1024:.2f}",
            f"{bw:g}" + ("" if g.memory_bandwidth_gbps else " (assumed)"),
            note,
        )
    features = ", ".join(hw.cpu_features) or "-"
    table.add_row(
        "RAM",
        f"{hw.cpu_cores} CPU cores",
        f"{hw.ram_total_mib / 1024:.2f}",
        f"{hw.ram_available_mib / 1024:.2f}",
        f"{hw.ram_bandwidth():g}" + ("" if hw.ram_bandwidth_gbps else " (assumed)"),
        features,
    )
    for w in hw.workers:
        for i, d in enumerate(w.devices):
            table.add_row(
                f"worker {w.address} {d.kind.upper()} {i}",
                d.name,
                f"{d.memory_total_mib / 1024:.2f}",
                f"{d.memory_free_mib / 1024:.2f}",
                f"{d.bandwidth_gbps():g}" + ("" if d.memory_bandwidth_gbps else " (assumed)"),
                "llama.cpp RPC",
            )
    console.print(table)
    if not hw.gpus:
        console.print("no NVIDIA GPU: CPU-only machine")
    for note in hw.notes:
        console.print(f"[dim]{note}[/dim]")


def render_plan(
    console: Console, p: Plan, verify: VerifyReport | None = None, access: GpuAccess | None = None
) -> None:
    where = (
        "entirely on the GPUs"
        if p.full_offload
        else (
            f"{p.n_gpu_layers}/{p.layers_total} layers on GPUs, the rest in RAM"
            if p.n_gpu_layers
            else "on the CPU"
        )
    )
    if p.workers:
        where = f"split across this host and {len(p.workers)} worker(s)"
    speed = p.estimate.tokens_per_s
    speed_text = "" if speed == float("inf") else f", ~{speed:.1f} tok/s (bandwidth bound)"
    console.print(
        f"\n[bold]Choice:[/bold] {p.variant_name} [bold]{p.quant}[/bold] — {where}; "
        f"context {p.context} x {p.parallel} sequence(s){speed_text}"
    )
    table = Table(title="Placement", title_justify="left")
    cols = ["host", "device", "layers", "weights", "KV cache", "compute", "margin", "total GiB"]
    cols.append("capacity GiB")
    for col in cols if p.workers else cols[1:]:
        table.add_column(col, justify="left" if col in ("host", "device") else "right")
    # llama.cpp's layer order: the first layers in local RAM (the last entry), then one run per
    # device in the placement's order
    start = p.placement[-1].layers
    for d in p.placement:
        label = f"GPU {d.index} {d.name}" if d.device == "gpu" else ("CPU RAM" if d.host is None else "CPU")
        layers = str(d.layers)
        if p.workers:
            at = 0 if d is p.placement[-1] else start
            if d.layers:
                layers = f"{d.layers} (layers {at}-{at + d.layers - 1})"
            if d is not p.placement[-1]:
                start += d.layers
            if d.holds_output:
                layers += " + output"
        table.add_row(
            *((d.host or "this host",) if p.workers else ()),
            label,
            layers,
            _gib(d.weights_bytes),
            _gib(d.kv_bytes),
            _gib(d.compute_bytes),
            _gib(d.margin_bytes),
            _gib(d.bytes),
            _gib(d.capacity_bytes),
        )
    e = p.estimate
    table.add_row(
        *(("",) if p.workers else ()),
        "total",
        str(p.layers_total),
        _gib(e.weights_bytes),
        _gib(e.kv_bytes),
        _gib(e.compute_bytes),
        _gib(e.margin_bytes),
        _gib(e.total_bytes),
        "",
        style="bold",
    )
    console.print(table)
    split = engine_tensor_split(p, access)
    rpc = f" rpc={','.join(p.workers)}" if p.workers else ""
    console.print(
        f"llama.cpp: n_gpu_layers={p.n_gpu_layers} tensor_split={list(split) or '-'}{rpc} "
        f"n_ctx={p.n_ctx} n_seq_max={p.parallel} flash_attn={p.flash_attn} type_k/v={p.kv_type}"
    )
    files = p.files[0] if len(p.files) == 1 else f"{p.files[0]} (+ {len(p.files) - 1} more parts)"
    console.print(f"[bold]Files:[/bold] {files} (sizes: {e.size_source})")
    console.print("[bold]Why:[/bold]")
    for line in p.reasons:
        console.print(f"  - {line}")
    console.print("[bold]Arithmetic:[/bold]")
    for line in p.arithmetic:
        console.print(f"  {line}")
    if verify is not None:
        for line in verify.lines():
            console.print(f"  {line}")


def engine_tensor_split(p: Plan, access: GpuAccess | None) -> tuple[float, ...]:
    """The tensor_split llama.cpp gets: the workers' devices, then the local GPUs as the engine
    numbers them."""
    remote = sum(1 for d in p.placement if d.host is not None)
    if access is None:
        return engine_split(p).tensor_split
    if not p.workers:
        return access.tensor_split(p.tensor_split)
    local = engine_split(p).tensor_split[remote:]
    return engine_split(p, access.tensor_split(local) or local).tensor_split


@click.command("plan")
@hardware_option("JSON hardware profile to plan for instead of this machine")
@workers_option
@click.option("--variant", default=None, help="hermes-4-14b, hermes-4.3-36b, hermes-4-70b or hermes-4-405b")
@click.option("--quant", default=None, help="Q4_K_M, Q8_0, ... (default: the best that fits)")
@click.option("--ctx", type=click.IntRange(256), default=None, help="context per sequence (default 16384)")
@click.option(
    "--min-ctx",
    type=click.IntRange(256),
    default=None,
    help="at least this context per sequence (fewer slots, q8_0 KV, a smaller quant; as serve --min-ctx)",
)
@click.option(
    "--parallel",
    type=click.IntRange(1, 64),
    default=None,
    help="sequences at once (default: the most, up to 4, that fit beside the model)",
)
@click.option("--kv-type", type=click.Choice(KV_TYPE_NAMES), default=None, help="KV cache type (default f16)")
@click.option("--prefer", type=click.Choice(["quality", "speed"]), default="quality", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--show-hardware", is_flag=True, help="only show the hardware (a profile with --json)")
@click.option(
    "--draft-model",
    default=None,
    metavar="auto|FILE",
    help="leave room for a draft model (speculative decoding): the catalog's, or a GGUF file",
)
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="dry-run llama.cpp on the chosen file when it is local",
)
def plan_command(
    hardware_file: Path | None,
    worker_addresses: tuple[str, ...],
    worker_profiles: tuple[Path, ...],
    variant: str | None,
    quant: str | None,
    ctx: int | None,
    min_ctx: int | None,
    parallel: int | None,
    kv_type: str | None,
    prefer: str,
    as_json: bool,
    show_hardware: bool,
    draft_model: str | None,
    verify: bool,
) -> None:
    """Choose the Hermes 4 variant, quantization and GPU/CPU split for this machine (and its llama.cpp
    RPC workers, split per host), and show the arithmetic. Exit status 1 when nothing fits."""
    hw = load_hardware(hardware_file, worker_profiles, worker_addresses)
    console = Console(soft_wrap=True)
    if show_hardware:
        if as_json:
            click.echo(json.dumps(to_profile_json(hw), indent=2))
        else:
            render_hardware(console, hw)
        return
    catalog = load_catalog_or_fail()
    env = HubEnv.from_environ()
    access = engine_access(hw, real_engine=False)
    if access is not None and access.problems:
        err = Console(stderr=True, soft_wrap=True)
        if access.blocked:
            err.print(f"[bold yellow]{access.banner()}[/bold yellow]")
        for problem in access.problems:
            if not access.blocked or problem.severity != "fail":
                err.print(f"[yellow]GPUs:[/yellow] {problem.message}")
    try:
        p = make_plan(
            catalog,
            access.planning_hardware() if access is not None else hw,
            env,
            variant=variant,
            quant=quant,
            ctx=ctx,
            parallel=parallel,
            kv_type=kv_type or "f16",
            prefer=prefer,
            min_ctx=min_ctx,
            # as serve does: --min-ctx may trade the KV type unless --kv-type chose it
            kv_fallback=("q8_0",) if min_ctx and kv_type is None else (),
            draft=draft_request(draft_model),
        )
    except NothingFits as exc:
        if as_json:
            click.echo(json.dumps(plan_to_json(exc.result)))
        else:
            render_hardware(console, hw)
            console.print("[bold]The closest option:[/bold]")
            for line in exc.result.arithmetic:
                console.print(f"  {line}")
        raise
    report = None
    # The dry run loads on this host only; a split across workers would need them registered.
    if verify and p.estimate.size_source == "gguf" and not p.workers:
        paths = cached_files(entry_of(catalog, p), env)
        if paths:
            report = verify_plan(p, first_file(paths))
    if as_json:
        doc = plan_to_json(p)
        if access is not None:
            doc["engine"] = engine_json(access, p)
        if report is not None:
            doc["verify"] = [
                {
                    "name": m.name,
                    "estimated_bytes": m.estimated_bytes,
                    "measured_bytes": m.measured_bytes,
                    "error": m.error,
                    "how": m.how,
                }
                for m in report.measurements
            ] or {"skipped": report.note}
        click.echo(json.dumps(doc, indent=2))
        return
    render_hardware(console, hw)
    render_plan(console, p, report, access)


def engine_json(access: GpuAccess, p: Plan) -> dict[str, Any]:
    """The engine the plan is for (an extra key of `plan --json`)."""
    return {
        "backends": list(access.engine.backends),
        "gpu_offload": access.engine.gpu_offload,
        "source": access.engine.source,
        "usable_gpus": [m.gpu.index for m in access.usable],
        "blocked": access.blocked,
        "tensor_split": list(engine_tensor_split(p, access)),
        "problems": [
            {"code": x.code, "severity": x.severity, "message": x.message, "fix": x.fix}
            for x in access.problems
        ],
    }
