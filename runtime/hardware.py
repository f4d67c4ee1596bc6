"""What machine are we on: NVIDIA GPUs through NVML, RAM and CPU through psutil and /proc/cpuinfo.

Discovery is injectable: `discover()` takes the NVML module and psutil as arguments (tests pass
fakes), and `load_profile()` reads the same structure from a JSON file so users can plan for a
machine they do not have (`hermesd plan --hardware box.json`). The JSON shape is a public contract:
shared/reference/hardware-profile.md. A machine without NVML or without GPUs is a CPU-only machine,
not an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# What a driver and a desktop typically keep for themselves when a profile gives only the total.
DRIVER_RESERVE_MIB = 512
RAM_AVAILABLE_FRACTION = 0.90
# Decode speed is bounded by memory bandwidth. These defaults only serve the planner's speed
# estimate when neither the profile nor NVML says better: a dual-channel DDR4-3200 desktop
# (~51 GB/s) and a mid-range GPU.
DEFAULT_RAM_BANDWIDTH_GBPS = 50.0
DEFAULT_GPU_BANDWIDTH_GBPS = 300.0
# Memory bandwidth of common GPUs (vendor data sheets, GB/s), matched on the NVML name.
KNOWN_GPU_BANDWIDTH_GBPS: tuple[tuple[str, float], ...] = (
    ("H200", 4800.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),
    ("L40S", 864.0),
    ("L40", 864.0),
    ("L4", 300.0),
    ("A10G", 600.0),
    ("A10", 600.0),
    ("T4", 320.0),
    ("V100", 900.0),
    ("RTX 6000 Ada", 960.0),
    ("RTX A6000", 768.0),
    ("RTX 5090", 1792.0),
    ("RTX 5080", 960.0),
    ("RTX 4090", 1008.0),
    ("RTX 4080", 717.0),
    ("RTX 4070 Ti", 504.0),
    ("RTX 4070", 504.0),
    ("RTX 4060 Ti", 288.0),
    ("RTX 4060", 272.0),
    ("RTX 3090", 936.0),
    ("RTX 3080", 760.0),
    ("RTX 3070", 448.0),
    ("RTX 3060", 360.0),
)
# CPU flags that matter to llama.cpp's kernels (and to the AMX trap in virtual machines).
INTERESTING_CPU_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "sve",
    "i8mm",
    "bf16",
)


class HardwareProfileError(ValueError):
    """A --hardware file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_total_mib: int
    memory_free_mib: int
    compute_capability: str | None = None
    memory_bandwidth_gbps: float | None = None
    uuid: str | None = None
    # "0000:01:00.0": how the GPU is matched to llama.cpp's devices (CUDA may number them otherwise)
    pci_bus_id: str | None = None

    def bandwidth_gbps(self) -> float:
        """Measured or declared bandwidth, else a data-sheet figure by name, else a default."""
        return gpu_bandwidth_gbps(self.name, self.memory_bandwidth_gbps)


def gpu_bandwidth_gbps(name: str, declared: float | None = None) -> float:
    """A GPU's memory bandwidth: the declared figure, else a data-sheet one by name, else a default."""
    if declared:
        return declared
    for pattern, gbps in KNOWN_GPU_BANDWIDTH_GBPS:
        if pattern.lower() in name.lower():
            return gbps
    return DEFAULT_GPU_BANDWIDTH_GBPS


@dataclass(frozen=True)
class EngineSpec:
    """A profile's optional `engine` section: the llama.cpp build the machine has, for
    `plan --hardware` (without it the GPUs are assumed usable). `serve` and `doctor` always ask
    the engine they really load."""

    backends: tuple[str, ...]
    gpu_offload: bool
    cuda_archs: tuple[str, ...] = ()


@dataclass(frozen=True)
class RemoteDevice:
    """One device a llama.cpp RPC worker offers, as the worker reports it (or a worker profile
    declares it). The planner treats it like a local device behind a network link."""

    name: str
    kind: str  # "gpu" | "cpu"
    memory_total_mib: int
    memory_free_mib: int
    # Only for the planner's speed estimate; None: by GPU name, or the RAM default for a CPU.
    memory_bandwidth_gbps: float | None = None

    def bandwidth_gbps(self) -> float:
        if self.kind == "gpu":
            return gpu_bandwidth_gbps(self.name, self.memory_bandwidth_gbps)
        return self.memory_bandwidth_gbps or DEFAULT_RAM_BANDWIDTH_GBPS


@dataclass(frozen=True)
class Worker:
    """A llama.cpp RPC worker on another host: its address and its devices, in the order the
    worker lists them (llama.cpp registers them in that order)."""

    address: str  # "HOST:PORT"
    devices: tuple[RemoteDevice, ...]


@dataclass(frozen=True)
class Hardware:
    gpus: tuple[Gpu, ...]
    ram_total_mib: int
    ram_available_mib: int
    cpu_cores: int
    cpu_threads: int | None = None
    cpu_features: tuple[str, ...] = ()
    ram_bandwidth_gbps: float | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    # "discovered" or "profile <path>": shown with the plan so nobody mistakes one for the other.
    source: str = "discovered"
    notes: tuple[str, ...] = field(default=())
    engine: EngineSpec | None = None
    # llama.cpp RPC workers on other hosts, in registration order (`--worker`/`--worker-profile`).
    workers: tuple[Worker, ...] = ()

    def ram_bandwidth(self) -> float:
        return self.ram_bandwidth_gbps or DEFAULT_RAM_BANDWIDTH_GBPS


# -- profiles


def load_profile(path: Path) -> Hardware:
    """Read a --hardware JSON profile; errors name the file and the field."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HardwareProfileError(
            f"{path}: cannot read the hardware profile: {exc.strerror or exc}"
        ) from exc
    except json.JSONDecodeError as exc:
        raise HardwareProfileError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    return hardware_from_dict(data, where=str(path), source=f"profile {path}")


def worker_from_profile(path: Path) -> Worker:
    """Read a worker profile: a --hardware profile of another host plus its RPC `"address"`
    ("HOST:PORT"). Each GPU becomes a device with its free memory; a host without GPUs offers one
    CPU device with the RAM available, capped by `"memory_limit_mib"` (the worker's --memory-limit).
    Errors name the file and the key."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HardwareProfileError(f"{path}: cannot read the worker profile: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise HardwareProfileError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    return worker_from_dict(data, where=str(path))


def worker_from_dict(data: Any, *, where: str = "worker profile") -> Worker:
    hw = hardware_from_dict(data, where=where, source=f"worker profile {where}")
    raw_address = data.get("address")
    if raw_address is None:
        raise HardwareProfileError(f'{where}.address: missing (the worker\'s "HOST:PORT")')
    if not isinstance(raw_address, str):
        raise HardwareProfileError(f'{where}.address: expected a string "HOST:PORT", got {raw_address!r}')
    problem = address_problem(raw_address)
    if problem:
        raise HardwareProfileError(f"{where}.address: {problem}")
    limit = _number(data, "memory_limit_mib", where)
    if hw.gpus:
        devices = tuple(
            RemoteDevice(
                name=g.name,
                kind="gpu",
                memory_total_mib=g.memory_total_mib,
                memory_free_mib=g.memory_free_mib,
                memory_bandwidth_gbps=g.memory_bandwidth_gbps,
            )
            for g in hw.gpus
        )
    else:
        total = hw.ram_total_mib if limit is None else min(hw.ram_total_mib, limit)
        free = hw.ram_available_mib if limit is None else min(hw.ram_available_mib, limit)
        devices = (
            RemoteDevice(
                name="CPU",
                kind="cpu",
                memory_total_mib=total,
                memory_free_mib=free,
                memory_bandwidth_gbps=hw.ram_bandwidth_gbps,
            ),
        )
    return Worker(address=raw_address, devices=devices)


def address_problem(address: str) -> str | None:
    """Why `address` is not a worker's "HOST:PORT", or None. llama.cpp's RPC client splits an
    endpoint at its first ':', so the host is an IPv4 address or a name, never an IPv6 literal."""
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        return f'expected "HOST:PORT", got {address!r}'
    if ":" in host or "[" in host:
        return f"llama.cpp's RPC client takes IPv4 addresses or host names only, got {address!r}"
    if any(c.isspace() for c in host):
        return f"not a host name or address: {host!r}"
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"the port must be a number from 1 to 65535, got {port!r}"
    return None


def hardware_from_dict(data: Any, *, where: str = "profile", source: str = "profile") -> Hardware:
    if not isinstance(data, Mapping):
        raise HardwareProfileError(f"{where}: expected a JSON object at the top level")
    raw_gpus = data.get("gpus", [])
    if not isinstance(raw_gpus, list):
        raise HardwareProfileError(f"{where}: gpus: expected a list (empty for a CPU-only machine)")
    gpus = tuple(_gpu(g, i, f"{where}: gpus[{i}]") for i, g in enumerate(raw_gpus))
    ram_total = _required(data, "ram_total_mib", where)
    ram_available = _number(data, "ram_available_mib", where)
    if ram_available is None:
        ram_available = int(ram_total * RAM_AVAILABLE_FRACTION)
    if ram_available > ram_total:
        raise HardwareProfileError(f"{where}: ram_available_mib ({ram_available}) exceeds ram_total_mib")
    cores = _number(data, "cpu_cores", where)
    features = data.get("cpu_features", [])
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise HardwareProfileError(f"{where}: cpu_features: expected a list of strings")
    return Hardware(
        gpus=gpus,
        ram_total_mib=int(ram_total),
        ram_available_mib=int(ram_available),
        cpu_cores=int(cores or 1),
        cpu_threads=_number(data, "cpu_threads", where),
        cpu_features=tuple(features),
        ram_bandwidth_gbps=_float(data, "ram_bandwidth_gbps", where),
        driver_version=_str(data, "driver_version", where),
        cuda_version=_str(data, "cuda_version", where),
        source=source,
        engine=_engine(data.get("engine"), f"{where}: engine"),
    )


def _engine(raw: Any, where: str) -> EngineSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise HardwareProfileError(f'{where}: expected an object such as {{"backends": ["CPU"]}}')
    backends = raw.get("backends", ["CPU"])
    archs = raw.get("cuda_archs", [])
    for key, value in (("backends", backends), ("cuda_archs", archs)):
        if not isinstance(value, list) or not all(
            isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value
        ):
            raise HardwareProfileError(f"{where}.{key}: expected a list of strings")
    offload = raw.get("gpu_offload")
    if offload is not None and not isinstance(offload, bool):
        raise HardwareProfileError(f"{where}.gpu_offload: expected true or false")
    names = tuple(str(b) for b in backends)
    return EngineSpec(
        backends=names,
        gpu_offload=offload if offload is not None else any(b.upper() != "CPU" for b in names),
        cuda_archs=tuple(str(a).replace(".", "") for a in archs),
    )


def _gpu(raw: Any, i: int, where: str) -> Gpu:
    if not isinstance(raw, Mapping):
        raise HardwareProfileError(f"{where}: expected an object")
    name = _str(raw, "name", where) or f"GPU {i}"
    total = _required(raw, "memory_total_mib", where)
    free = _number(raw, "memory_free_mib", where)
    if free is None:
        free = max(total - DRIVER_RESERVE_MIB, 0)
    if free > total:
        raise HardwareProfileError(f"{where}.memory_free_mib: {free} exceeds memory_total_mib ({total})")
    cc = raw.get("compute_capability")
    if cc is not None and not isinstance(cc, (str, int, float)):
        raise HardwareProfileError(f'{where}.compute_capability: expected a string such as "8.6"')
    index = _number(raw, "index", where)
    return Gpu(
        index=int(index if index is not None else i),
        name=name,
        memory_total_mib=int(total),
        memory_free_mib=int(free),
        compute_capability=None if cc is None else str(cc),
        memory_bandwidth_gbps=_float(raw, "memory_bandwidth_gbps", where),
        uuid=_str(raw, "uuid", where),
        pci_bus_id=_str(raw, "pci_bus_id", where),
    )


def _required(raw: Mapping[str, Any], key: str, where: str) -> int:
    value = _number(raw, key, where)
    if value is None:
        raise HardwareProfileError(f"{where}.{key}: missing (a number of MiB)")
    return value


def _number(raw: Mapping[str, Any], key: str, where: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise HardwareProfileError(f"{where}.{key}: expected a non-negative number, got {value!r}")
    return int(value)


def _float(raw: Mapping[str, Any], key: str, where: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise HardwareProfileError(f"{where}.{key}: expected a positive number, got {value!r}")
    return float(value)


def _str(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise HardwareProfileError(f"{where}.{key}: expected a string, got {value!r}")
    return value


def to_profile_json(hw: Hardware) -> dict[str, Any]:
    """The profile structure of shared/reference/hardware-profile.md, plus optional extra keys."""
    out: dict[str, Any] = {
        "gpus": [
            {
                "index": g.index,
                "name": g.name,
                "memory_total_mib": g.memory_total_mib,
                "memory_free_mib": g.memory_free_mib,
                "compute_capability": g.compute_capability,
                **({"memory_bandwidth_gbps": g.memory_bandwidth_gbps} if g.memory_bandwidth_gbps else {}),
                **({"uuid": g.uuid} if g.uuid else {}),
                **({"pci_bus_id": g.pci_bus_id} if g.pci_bus_id else {}),
            }
            for g in hw.gpus
        ],
        "ram_total_mib": hw.ram_total_mib,
        "ram_available_mib": hw.ram_available_mib,
        "cpu_cores": hw.cpu_cores,
    }
    optional = {
        "cpu_threads": hw.cpu_threads,
        "cpu_features": list(hw.cpu_features) or None,
        "ram_bandwidth_gbps": hw.ram_bandwidth_gbps,
        "driver_version": hw.driver_version,
        "cuda_version": hw.cuda_version,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    if hw.workers:
        out["workers"] = [
            {
                "address": w.address,
                "devices": [
                    {
                        "name": d.name,
                        "kind": d.kind,
                        "memory_total_mib": d.memory_total_mib,
                        "memory_free_mib": d.memory_free_mib,
                    }
                    for d in w.devices
                ],
            }
            for w in hw.workers
        ]
    if hw.engine is not None:
        out["engine"] = {
            "backends": list(hw.engine.backends),
            "gpu_offload": hw.engine.gpu_offload,
            **({"cuda_archs": list(hw.engine.cuda_archs)} if hw.engine.cuda_archs else {}),
        }
    return out


# -- discovery


def discover(
    *,
    nvml: ModuleType | Any | None = None,
    psutil_module: ModuleType | Any | None = None,
    cpuinfo: Path = Path("/proc/cpuinfo"),
) -> Hardware:
    """Look at this machine. `nvml` defaults to the `pynvml` module of nvidia-ml-py; pass False-y
    stand-ins in tests. NVML failures (no driver, no GPU) give a CPU-only machine."""
    ps: Any = psutil_module
    if ps is None:
        import psutil

        ps = psutil
    notes: list[str] = []
    gpus, driver, cuda = _discover_gpus(nvml, notes)
    mem = ps.virtual_memory()
    physical = ps.cpu_count(logical=False)
    logical = ps.cpu_count(logical=True)
    return Hardware(
        gpus=gpus,
        ram_total_mib=int(mem.total // MIB),
        ram_available_mib=int(mem.available // MIB),
        cpu_cores=int(physical or logical or 1),
        cpu_threads=int(logical) if logical else None,
        cpu_features=read_cpu_features(cpuinfo),
        driver_version=driver,
        cuda_version=cuda,
        source="discovered",
        notes=tuple(notes),
    )


def _discover_gpus(nvml: Any, notes: list[str]) -> tuple[tuple[Gpu, ...], str | None, str | None]:
    if nvml is None:
        try:
            import pynvml

            nvml = pynvml
        except ImportError:
            notes.append(
                "NVML bindings (nvidia-ml-py) are not installed: treating this as a CPU-only machine"
            )
            return (), None, None
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...: no usable NVIDIA GPU
        notes.append(f"no NVIDIA driver reachable through NVML ({exc}): CPU-only machine")
        log.info("NVML unavailable: %s", exc)
        return (), None, None
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        cuda = _cuda_version(nvml)
        gpus = tuple(_read_gpu(nvml, i) for i in range(nvml.nvmlDeviceGetCount()))
        return gpus, driver, cuda
    except Exception as exc:
        notes.append(f"NVML failed while listing GPUs ({exc}): CPU-only machine")
        log.warning("NVML failed while listing GPUs: %s", exc)
        return (), None, None
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # shutting down a half-initialised NVML is best effort
            log.debug("nvmlShutdown failed", exc_info=True)


def _read_gpu(nvml: Any, index: int) -> Gpu:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
        cc: str | None = f"{major}.{minor}"
    except Exception:
        cc = None
    return Gpu(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        memory_total_mib=int(mem.total // MIB),
        memory_free_mib=int(mem.free // MIB),
        compute_capability=cc,
        memory_bandwidth_gbps=_bandwidth(nvml, handle),
        uuid=_optional(lambda: _text(nvml.nvmlDeviceGetUUID(handle))),
        pci_bus_id=_optional(lambda: _text(nvml.nvmlDeviceGetPciInfo(handle).busId)),
    )


def _bandwidth(nvml: Any, handle: Any) -> float | None:
    """Peak memory bandwidth: max memory clock (MHz) x bus width (bits) / 8 x 2 (double data rate)."""
    try:
        clock_mhz = nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_MEM)
        bus_bits = nvml.nvmlDeviceGetMemoryBusWidth(handle)
    except Exception:
        return None
    if not clock_mhz or not bus_bits:
        return None
    return round(clock_mhz * 1e6 * bus_bits / 8 * 2 / 1e9, 1)


def _cuda_version(nvml: Any) -> str | None:
    version = _optional(nvml.nvmlSystemGetCudaDriverVersion)
    if not version:
        return None
    return f"{int(version) // 1000}.{int(version) % 1000 // 10}"


def _optional(fn: Any) -> Any:
    try:
        return fn()
    except Exception:
        return None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


AMX_FLAGS = ("amx_tile", "amx_int8", "amx_bf16")


def extra_buffers_by_default(cpu_features: Sequence[str]) -> bool:
    """Whether llama.cpp's extra CPU buffer types (weight repacking for the AVX2/AVX-512 kernels, and
    AMX) are on when the user did not say: on, as llama-server has them, unless the CPU reports AMX,
    whose tile instructions trap (SIGILL) inside many virtual machines on the first quantized matmul.
    Repacking alone is plain SIMD code, safe wherever the CPU runs the rest of llama.cpp."""
    return not any(flag in cpu_features for flag in AMX_FLAGS)


def read_cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, ...]:
    """The llama.cpp-relevant CPU flags from /proc/cpuinfo ("flags" on x86, "Features" on ARM)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            present = set(value.split())
            return tuple(f for f in INTERESTING_CPU_FLAGS if f in present)
    return ()
