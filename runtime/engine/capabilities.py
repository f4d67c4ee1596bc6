"""What the installed llama.cpp can run on: its backends, devices, CUDA architectures, system info.

llama-cpp-python 0.3.36 binds none of ggml's device functions, so they are called through ctypes on
the same `libggml` that `libllama` loaded (found in /proc/self/maps and opened with RTLD_NOLOAD, so
no second copy with its own registry is ever loaded). The probe runs once per process
(`probe_capabilities`); everything else takes an `EngineCapabilities` value, so tests and
`--hardware` profiles pass simulated ones.

CUDA numbers GPUs fastest first unless `CUDA_DEVICE_ORDER=PCI_BUS_ID`; NVML numbers them by PCI bus.
`use_pci_bus_order()` sets the variable before llama.cpp initialises CUDA, and the GPUs are matched to
NVML's by PCI bus id anyway (runtime/gpu_access.py), so `tensor_split` names the cards the planner meant.

The capabilities are recorded in the state directory (`engine.json`): `hermesd doctor` compares
them with a later probe and reports a `pip install -U` that silently brought a CPU-only build back.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

# The llama-cpp-python release these bindings (ctypes structures below) were written and tested for;
# pyproject.toml pins the same version.
TESTED_LLAMA_CPP_PYTHON = "0.3.36"
RECORD_FILE = "engine.json"
GPU_BACKENDS = ("CUDA", "HIP", "ROCm", "Vulkan", "Metal", "SYCL", "MUSA", "CANN", "OpenCL")
DeviceKind = Literal["cpu", "gpu", "igpu", "accel", "meta"]
_KINDS: tuple[DeviceKind, ...] = ("cpu", "gpu", "igpu", "accel", "meta")  # enum ggml_backend_dev_type


@dataclass(frozen=True)
class EngineDevice:
    """One ggml backend device, in ggml's registry order."""

    name: str  # "CPU", "CUDA0", ...
    description: str
    kind: DeviceKind
    backend: str  # the registry that owns it: "CPU", "CUDA", ...
    memory_free_bytes: int
    memory_total_bytes: int
    pci_bus_id: str | None = None


@dataclass(frozen=True)
class EngineCapabilities:
    llama_cpp_python: str
    backends: tuple[str, ...]
    devices: tuple[EngineDevice, ...]
    gpu_offload: bool  # llama_supports_gpu_offload()
    cuda_archs: tuple[str, ...] = ()  # CMake style: "86", "89", "120"
    cpu_features: tuple[str, ...] = ()  # the CPU backend's own feature list ("AVX2", "AMX_INT8", ...)
    system_info: str = ""
    library: str = ""
    # "probed" for the engine of this process, "profile <path>" for a simulated one
    source: str = "probed"
    # llama.cpp's RPC backend is built in (`hermesd worker`, `serve --worker`: runtime/rpc.py). It is
    # not in `backends` and does not count as GPU offload: those describe this machine's devices.
    rpc: bool = False

    @property
    def gpu_devices(self) -> tuple[EngineDevice, ...]:
        """The devices llama.cpp offloads layers to, in the order `tensor_split` indexes them:
        discrete GPUs, or integrated ones when there is no discrete GPU."""
        gpus = tuple(d for d in self.devices if d.kind == "gpu" and d.backend != "RPC")
        return gpus or tuple(d for d in self.devices if d.kind == "igpu")

    @property
    def gpu_backends(self) -> tuple[str, ...]:
        return tuple(b for b in self.backends if b in GPU_BACKENDS)

    def summary(self) -> str:
        archs = f" (CUDA architectures {', '.join(self.cuda_archs)})" if self.cuda_archs else ""
        devices = ", ".join(d.name for d in self.devices) or "none"
        return (
            f"llama-cpp-python {self.llama_cpp_python}: backends {', '.join(self.backends) or 'none'}"
            f"{archs}; devices {devices}{'; RPC' if self.rpc else ''}"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def capabilities_from_json(data: Mapping[str, Any]) -> EngineCapabilities:
    devices = tuple(EngineDevice(**d) for d in data.get("devices", []))
    return EngineCapabilities(
        llama_cpp_python=str(data.get("llama_cpp_python", "")),
        backends=tuple(data.get("backends", ())),
        devices=devices,
        gpu_offload=bool(data.get("gpu_offload", False)),
        cuda_archs=tuple(data.get("cuda_archs", ())),
        cpu_features=tuple(data.get("cpu_features", ())),
        system_info=str(data.get("system_info", "")),
        library=str(data.get("library", "")),
        source=str(data.get("source", "probed")),
        rpc=bool(data.get("rpc", False)),
    )


def use_pci_bus_order(environ: os._Environ[str] | dict[str, str] | None = None) -> None:
    """Make CUDA number GPUs as NVML does. Must run before llama.cpp first touches CUDA (the ggml
    registry initialises lazily, on the first device query or model load)."""
    env = os.environ if environ is None else environ
    if env.get("CUDA_DEVICE_ORDER") not in (None, "", "PCI_BUS_ID"):
        log.info(
            "CUDA_DEVICE_ORDER=%s replaced by PCI_BUS_ID (GPUs are matched by PCI bus id)",
            env["CUDA_DEVICE_ORDER"],
        )
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"


def normalize_pci_bus_id(bus_id: str | None) -> str | None:
    """ "00000000:01:00.0" (NVML) and "0000:01:00.0" (CUDA) -> "0000:01:00.0"; None if unparsable."""
    if not bus_id:
        return None
    text = bus_id.strip().lower()
    try:
        domain, bus, rest = text.split(":")
        device, function = rest.split(".")
        return f"{int(domain, 16):04x}:{int(bus, 16):02x}:{int(device, 16):02x}.{int(function, 16)}"
    except ValueError:
        return text


# -- the probe (ctypes on libggml)


class _Caps(ctypes.Structure):
    _fields_ = (
        ("async_", ctypes.c_bool),
        ("host_buffer", ctypes.c_bool),
        ("buffer_from_host_ptr", ctypes.c_bool),
        ("events", ctypes.c_bool),
        ("mmap_support", ctypes.c_bool),
    )


class _Props(ctypes.Structure):
    """struct ggml_backend_dev_props (ggml-backend.h of llama-cpp-python 0.3.36)."""

    _fields_ = (
        ("name", ctypes.c_char_p),
        ("description", ctypes.c_char_p),
        ("memory_free", ctypes.c_size_t),
        ("memory_total", ctypes.c_size_t),
        ("type", ctypes.c_int),
        ("device_id", ctypes.c_char_p),
        ("caps", _Caps),
    )


class _Feature(ctypes.Structure):
    _fields_ = (("name", ctypes.c_char_p), ("value", ctypes.c_char_p))


_GetFeatures = ctypes.CFUNCTYPE(ctypes.POINTER(_Feature), ctypes.c_void_p)


def _bind(lib: ctypes.CDLL) -> Any:
    p, s, i = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "ggml_backend_reg_count": (s, []),
        "ggml_backend_reg_get": (p, [s]),
        "ggml_backend_reg_name": (ctypes.c_char_p, [p]),
        "ggml_backend_reg_get_proc_address": (p, [p, ctypes.c_char_p]),
        "ggml_backend_dev_count": (s, []),
        "ggml_backend_dev_get": (p, [s]),
        "ggml_backend_dev_name": (ctypes.c_char_p, [p]),
        "ggml_backend_dev_description": (ctypes.c_char_p, [p]),
        "ggml_backend_dev_type": (i, [p]),
        "ggml_backend_dev_memory": (None, [p, ctypes.POINTER(s), ctypes.POINTER(s)]),
        "ggml_backend_dev_get_props": (None, [p, ctypes.POINTER(_Props)]),
        "ggml_backend_dev_backend_reg": (p, [p]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


def loaded_library(stem: str, maps: Path = Path("/proc/self/maps")) -> str | None:
    """The path of an already loaded shared library whose file name starts with `stem` + "."."""
    try:
        text = maps.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        name = os.path.basename(path)
        if name.startswith(stem + ".") and (".so" in name or name.endswith(".dylib")):
            return path
    return None


def _open_libggml() -> tuple[ctypes.CDLL, str]:
    import llama_cpp
    import llama_cpp.llama_cpp

    path = loaded_library("libggml")
    if path is None:  # not Linux, or an unusual layout: the copy shipped beside libllama
        lib_dir = Path(llama_cpp.__file__).parent / "lib"
        candidates = sorted(lib_dir.glob("libggml.*"))
        if not candidates:
            raise OSError(f"libggml not found (looked in /proc/self/maps and {lib_dir})")
        path = str(candidates[0])
    mode = getattr(os, "RTLD_NOLOAD", 0) | getattr(os, "RTLD_NOW", 2)
    try:
        return ctypes.CDLL(path, mode=mode), path
    except OSError:  # RTLD_NOLOAD refused: it was not loaded under this name after all
        return ctypes.CDLL(path), path


def _features(g: Any, reg: int) -> dict[str, str]:
    address = g.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_get_features")
    if not address:
        return {}
    array = _GetFeatures(address)(reg)
    out: dict[str, str] = {}
    k = 0
    while array and array[k].name:
        out[array[k].name.decode()] = (array[k].value or b"").decode()
        k += 1
    return out


def cuda_archs_from_feature(value: str) -> tuple[str, ...]:
    """ggml-cuda's ARCHS feature (`__CUDA_ARCH_LIST__`, e.g. "750,860,890") -> ("75", "86", "89")."""
    out: list[str] = []
    for part in value.replace(";", ",").split(","):
        part = part.strip()
        if part.isdigit():
            arch = str(int(part) // 10)
            if arch not in out:
                out.append(arch)
    return tuple(out)


def probe() -> EngineCapabilities:
    """Ask the llama.cpp of this process. Prefer `probe_capabilities()` (cached)."""
    use_pci_bus_order()
    import llama_cpp
    import llama_cpp.llama_cpp as ll

    lib, path = _open_libggml()
    g = _bind(lib)
    ll.llama_backend_init()  # loads dynamic backends where the build uses them; idempotent
    backends: list[str] = []
    features: dict[str, dict[str, str]] = {}
    for r in range(g.ggml_backend_reg_count()):
        reg = g.ggml_backend_reg_get(r)
        name = (g.ggml_backend_reg_name(reg) or b"?").decode()
        if name == "RPC":  # other hosts' devices, not this machine's (EngineCapabilities.rpc)
            continue
        backends.append(name)
        features[name] = _features(g, reg)
    devices: list[EngineDevice] = []
    for k in range(g.ggml_backend_dev_count()):
        dev = g.ggml_backend_dev_get(k)
        props = _Props()
        g.ggml_backend_dev_get_props(dev, ctypes.byref(props))
        kind = g.ggml_backend_dev_type(dev)
        reg_name = g.ggml_backend_reg_name(g.ggml_backend_dev_backend_reg(dev)) or b"?"
        devices.append(
            EngineDevice(
                name=(g.ggml_backend_dev_name(dev) or b"").decode(),
                description=(g.ggml_backend_dev_description(dev) or b"").decode(),
                kind=_KINDS[kind] if 0 <= kind < len(_KINDS) else "accel",
                backend=reg_name.decode(),
                memory_free_bytes=int(props.memory_free),
                memory_total_bytes=int(props.memory_total),
                pci_bus_id=normalize_pci_bus_id((props.device_id or b"").decode() or None),
            )
        )
    cpu = features.get("CPU", {})
    return EngineCapabilities(
        llama_cpp_python=str(getattr(llama_cpp, "__version__", "")),
        backends=tuple(backends),
        devices=tuple(devices),
        # llama_supports_gpu_offload() is also true for an RPC build: ask for a local GPU instead
        gpu_offload=any(d.kind in ("gpu", "igpu") and d.backend != "RPC" for d in devices),
        cuda_archs=cuda_archs_from_feature(features.get("CUDA", {}).get("ARCHS", "")),
        cpu_features=tuple(k for k, v in cpu.items() if v == "1"),
        system_info=(ll.llama_print_system_info() or b"").decode("utf-8", "replace").strip(),
        library=path,
        rpc=bool(ll.llama_supports_rpc()),
    )


@functools.cache
def probe_capabilities() -> EngineCapabilities:
    caps = probe()
    log.debug("engine: %s", caps.summary())
    return caps


# -- the record in the state directory


@dataclass(frozen=True)
class EngineRecord:
    """What doctor compares against: the engine last seen, and the last one that could use a GPU."""

    current: EngineCapabilities | None
    last_gpu: EngineCapabilities | None = None
    last_gpu_at: str | None = None


def load_record(state_dir: Path) -> EngineRecord:
    path = state_dir / RECORD_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        current = capabilities_from_json(data["current"]) if data.get("current") else None
        last_gpu = capabilities_from_json(data["last_gpu"]) if data.get("last_gpu") else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if path.exists():
            log.warning("%s: ignoring an unreadable engine record (%s)", path, exc)
        return EngineRecord(current=None)
    return EngineRecord(current=current, last_gpu=last_gpu, last_gpu_at=data.get("last_gpu_at"))


def save_record(state_dir: Path, caps: EngineCapabilities) -> Path | None:
    """Record `caps` (keeping the last GPU-capable engine); None when the state dir is not writable."""
    previous = load_record(state_dir)
    last_gpu, last_gpu_at = previous.last_gpu, previous.last_gpu_at
    if caps.gpu_devices or caps.gpu_backends:
        last_gpu, last_gpu_at = caps, time.strftime("%Y-%m-%dT%H:%M:%S%z")
    doc = {
        "current": caps.to_json(),
        "last_gpu": last_gpu.to_json() if last_gpu else None,
        "last_gpu_at": last_gpu_at,
    }
    path = state_dir / RECORD_FILE
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        log.info("engine record not written to %s: %s", path, exc)
        return None
    return path
