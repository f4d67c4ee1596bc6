"""`hermesd doctor`: is this machine ready to serve, and if not, what to do about it.

One line per check, OK / WARN / FAIL, each problem with its fix; exit status 1 on any FAIL. It changes
nothing except the engine record in the state directory (runtime/engine/capabilities.py), which is how
a later doctor notices a `pip install -U` that silently brought a CPU-only llama.cpp back.
`--hardware FILE` replaces NVML discovery (the engine is always the real one), so a simulated GPU
machine shows here what `serve` would refuse.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import click

from hermesd.cli.autoplan import UsageFailure, engine_access, load_hardware
from hermesd.cli.hardware_option import hardware_option
from hermesd.runtime.cuda_toolkit import (
    is_toolkit,
    pypi_toolkit_home,
    system_candidates,
    toolkit_version,
)
from hermesd.runtime.engine.capabilities import (
    TESTED_LLAMA_CPP_PYTHON,
    EngineCapabilities,
    load_record,
    probe_capabilities,
    save_record,
)
from hermesd.runtime.gpu_access import GpuAccess
from hermesd.runtime.hardware import AMX_FLAGS, Hardware
from hermesd.server.settings import ConfigFileError, Settings, load_settings

Status = Literal["OK", "WARN", "FAIL"]
GIB = 1024**3
MIN_FREE_DISK = 10 * GIB  # the smallest Hermes 4 (14B Q4_K_M) is ~9 GB
UNIT = Path("/etc/systemd/system/hermesd.service")


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def check_python() -> list[Check]:
    ok = sys.version_info >= (3, 11)
    try:
        version = metadata.version("hermesd")
    except metadata.PackageNotFoundError:
        version = "not installed (running from a source tree)"
    return [
        Check(
            "python",
            "OK" if ok else "FAIL",
            f"{platform.python_version()} ({sys.executable})",
            "" if ok else "hermesd needs Python 3.11 or newer",
        ),
        Check("hermesd", "OK", version),
    ]


def check_engine(caps: EngineCapabilities, hw: Hardware, settings: Settings) -> list[Check]:
    out = []
    pinned = caps.llama_cpp_python == TESTED_LLAMA_CPP_PYTHON
    archs = f"; CUDA architectures {', '.join(caps.cuda_archs)}" if caps.cuda_archs else ""
    out.append(
        Check(
            "llama.cpp build",
            "OK" if pinned else "WARN",
            f"llama-cpp-python {caps.llama_cpp_python}, backends {', '.join(caps.backends)}{archs}",
            ""
            if pinned
            else f"hermesd's ctypes bindings are tested with {TESTED_LLAMA_CPP_PYTHON}: "
            f"python3 -m pip install llama-cpp-python=={TESTED_LLAMA_CPP_PYTHON} "
            "(then hermesd setup-gpu on a GPU machine)",
        )
    )
    features = ", ".join(caps.cpu_features) or "none reported"
    out.append(Check("llama.cpp CPU features", "OK", features))
    amx = [f for f in AMX_FLAGS if f in hw.cpu_features]
    if amx and settings.cpu_extra_buffers:
        out.append(
            Check(
                "AMX",
                "WARN",
                f"the CPU reports {', '.join(amx)} and cpu_extra_buffers is on: inside many virtual machines "
                "AMX instructions trap, and the first quantized request kills the daemon with SIGILL",
                "unset HERMESD_CPU_EXTRA_BUFFERS (the default keeps llama.cpp's AMX buffers off)",
            )
        )
    elif amx:
        out.append(
            Check("AMX", "OK", f"{', '.join(amx)} present; llama.cpp's AMX buffers stay off (SIGILL-safe)")
        )
    return out


def check_gpus(access: GpuAccess) -> list[Check]:
    hw, caps = access.hardware, access.engine
    driver = f"driver {hw.driver_version or '?'}, CUDA {hw.cuda_version or '?'}" if hw.gpus else ""
    listing = "; ".join(
        f"GPU {g.index} {g.name} {g.memory_total_mib / 1024:.1f} GiB (compute {g.compute_capability or '?'}, "
        f"PCI {g.pci_bus_id or '?'})"
        for g in hw.gpus
    )
    source = "NVML" if hw.source == "discovered" else hw.source
    out = [
        Check(
            f"GPUs ({source})",
            "OK",
            f"{driver}: {listing}" if hw.gpus else "no NVIDIA GPU: a CPU-only machine" + _notes(hw),
        )
    ]
    devices = ", ".join(
        f"{d.name} ({d.description}, {d.memory_total_bytes / GIB:.1f} GiB"
        + (f", PCI {d.pci_bus_id})" if d.pci_bus_id else ")")
        for d in caps.devices
    )
    out.append(Check("engine devices", "OK", devices or "none"))
    for p in access.problems:
        status: Status = {"fail": "FAIL", "warn": "WARN", "info": "OK"}[p.severity]  # type: ignore[assignment]
        out.append(Check(f"GPU access: {p.code}", status, p.message, p.fix))
    if hw.gpus and access.usable and not access.failures():
        pairs = ", ".join(f"NVML GPU {m.gpu.index} = {m.device.name}" for m in access.usable)
        out.append(
            Check("GPU access", "OK", f"llama.cpp can use {len(access.usable)} of {len(hw.gpus)}: {pairs}")
        )
    return out


def _notes(hw: Hardware) -> str:
    return f" ({'; '.join(hw.notes)})" if hw.notes else ""


def check_record(state_dir: Path, caps: EngineCapabilities) -> list[Check]:
    """Compare with the engine recorded earlier, then record this one."""
    record = load_record(state_dir)
    out = []
    if record.last_gpu is not None and not caps.gpu_backends:
        out.append(
            Check(
                "engine record",
                "FAIL",
                f"this environment had a {', '.join(record.last_gpu.gpu_backends) or 'GPU'} build of "
                f"llama-cpp-python {record.last_gpu.llama_cpp_python} (recorded {record.last_gpu_at}) and "
                "now has a CPU-only one: a `pip install -U` probably rebuilt it from PyPI's source",
                "hermesd setup-gpu (reinstalls the kept CUDA wheel in seconds when the options match)",
            )
        )
    path = save_record(state_dir, caps)
    out.append(
        Check(
            "engine record",
            "OK" if path else "WARN",
            f"written to {path}" if path else f"could not write {state_dir}/engine.json",
        )
    )
    return out


def check_toolkits(access: GpuAccess) -> list[Check]:
    found = [h for h in system_candidates(os.environ) if is_toolkit(h)]
    pypi = pypi_toolkit_home()
    if is_toolkit(pypi):
        found.append(pypi)
    if found:
        listing = ", ".join(f"CUDA {toolkit_version(h) or '?'} at {h}" for h in found)
        return [Check("CUDA toolkits", "OK", listing)]
    needed = bool(access.hardware.gpus) and not access.engine.gpu_backends
    return [
        Check(
            "CUDA toolkits",
            "WARN" if needed else "OK",
            "none found",
            "hermesd setup-gpu installs NVIDIA's CUDA 13.0 toolkit wheels from PyPI (about 1 GB)"
            if needed
            else "",
        )
    ]


def check_memory_and_disk(hw: Hardware, cache_dir: Path) -> list[Check]:
    out = [
        Check(
            "RAM", "OK", f"{hw.ram_total_mib / 1024:.1f} GiB, {hw.ram_available_mib / 1024:.1f} GiB available"
        )
    ]
    existing = next((p for p in (cache_dir, *cache_dir.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(existing).free
    enough = free >= MIN_FREE_DISK
    out.append(
        Check(
            "disk (model cache)",
            "OK" if enough else "WARN",
            f"{free / GIB:.1f} GiB free for {cache_dir}",
            ""
            if enough
            else "free some space or point HF_HOME elsewhere: the smallest Hermes 4 file is ~9 GB",
        )
    )
    return out


def writable(path: Path) -> str | None:
    """None if `path` is (or can be made) a writable directory, else why not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def check_dirs(state_dir: Path, cache_dir: Path) -> list[Check]:
    out = []
    severities: tuple[tuple[str, Path, Status], ...] = (
        ("state dir", state_dir, "FAIL"),
        ("model cache", cache_dir, "WARN"),
    )
    for name, path, severity in severities:
        why = writable(path)
        out.append(
            Check(
                name,
                "OK" if why is None else severity,
                f"{path} writable" if why is None else f"{path}: {why}",
                "" if why is None else f"make {path} writable by this user, or set another location",
            )
        )
    return out


def check_models(cache_dir: Path) -> list[Check]:
    from hermesd.models.catalog import CatalogError, load_catalog
    from hermesd.models.gguf_validate import GGUFValidationError, validate_gguf
    from hermesd.models.local_models import list_local_models

    try:
        models = list_local_models(load_catalog(), cache_dir)
    except CatalogError as exc:
        return [Check("models", "FAIL", f"the catalog cannot be read: {exc}", "hermesd catalog refresh")]
    if not models:
        return [
            Check("models", "OK", f"none in {cache_dir} yet: `hermesd pull` or `hermesd serve` fetches one")
        ]
    out = []
    for m in models:
        if not m.complete:
            out.append(
                Check(f"model {m.name}", "WARN", "incomplete download", f"hermesd pull {m.variant}:{m.quant}")
            )
            continue
        try:
            validate_gguf(m.first, kind="model")
        except GGUFValidationError as exc:
            out.append(
                Check(f"model {m.name}", "FAIL", f"damaged: {exc}", f"delete {m.first} and pull it again")
            )
            continue
        out.append(Check(f"model {m.name}", "OK", f"{m.size_bytes / GIB:.1f} GiB, valid GGUF"))
    return out


def check_port(settings: Settings) -> list[Check]:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((settings.host, settings.port))
    except OSError as exc:
        return [
            Check(
                "port",
                "WARN",
                f"{settings.host}:{settings.port} is in use ({exc.strerror}): hermesd may already be running",
                "stop the other server, or pick another --port",
            )
        ]
    return [Check("port", "OK", f"{settings.host}:{settings.port} is free")]


def check_systemd() -> list[Check]:
    if not UNIT.exists():
        return [Check("systemd unit", "OK", "not installed (`hermesd install-service` installs it)")]
    if shutil.which("systemctl") is None:
        return [Check("systemd unit", "OK", f"{UNIT} installed; systemctl not available")]
    try:
        state = subprocess.run(
            ["systemctl", "is-active", UNIT.name], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        state = f"unknown ({exc})"
    ok = state in ("active", "inactive")
    return [
        Check(
            "systemd unit",
            "OK" if ok else "WARN",
            f"{UNIT}: {state}",
            "" if ok else "journalctl -u hermesd -n 50",
        )
    ]


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@hardware_option("JSON hardware profile instead of NVML discovery (the engine is always the installed one)")
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path), default=None, help="TOML config file"
)
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False), default=None)
def doctor_command(
    as_json: bool, hardware_file: Path | None, config_file: Path | None, state_dir: Path | None
) -> None:
    """Check that this machine can serve: engine build, GPUs, toolkits, memory, disk, models, port.
    Exit status 1 when any check FAILs."""
    from hermesd.models.hub import HubEnv

    flags: dict[str, Any] = {"hardware": hardware_file, "state_dir": state_dir}
    try:
        settings = load_settings({k: v for k, v in flags.items() if v is not None}, config_file)
    except (ConfigFileError, ValueError) as exc:
        raise UsageFailure(f"settings: {exc}") from exc
    hw = load_hardware(settings.hardware)
    caps = probe_capabilities()
    access = engine_access(hw, real_engine=True)
    assert access is not None
    cache_dir = HubEnv.from_environ().cache_dir
    checks = [
        *check_python(),
        *check_engine(caps, hw, settings),
        *check_gpus(access),
        *check_record(settings.state_dir, caps),
        *check_toolkits(access),
        *check_memory_and_disk(hw, cache_dir),
        *check_dirs(settings.state_dir, cache_dir),
        *check_models(cache_dir),
        *check_port(settings),
        *check_systemd(),
    ]
    failed = any(c.status == "FAIL" for c in checks)
    if as_json:
        doc = {"ok": not failed, "checks": [asdict(c) for c in checks], "engine": caps.to_json()}
        click.echo(json.dumps(doc, indent=2))
    else:
        colors = {"OK": "green", "WARN": "yellow", "FAIL": "red"}
        for c in checks:
            click.echo(
                f"{click.style(c.status.ljust(4), fg=colors[c.status], bold=True)} {c.name}: {c.detail}"
            )
            if c.fix and c.status != "OK":
                click.echo(f"     fix: {c.fix}")
        summary = "FAIL: fix the lines above before serving" if failed else "ready to serve"
        click.echo(summary)
    if failed:
        sys.exit(1)
