"""Which of the machine's GPUs the installed llama.cpp can really use.

`gpu_access(hardware, engine)` is pure: it matches the GPUs NVML (or a --hardware profile) reports to
the engine's GPU devices by PCI bus id, checks that the build has code for each GPU's compute
capability, and says what is wrong in words a user can act on. `plan` and `serve` then plan on
`planning_hardware()` (the GPUs both sides see, in llama.cpp's order) and give llama.cpp
`tensor_split()` over its own device list, so a split lands on the cards the planner meant even where
CUDA numbers them differently from NVML.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from hermesd.runtime.engine.capabilities import (
    EngineCapabilities,
    EngineDevice,
    normalize_pci_bus_id,
)
from hermesd.runtime.hardware import MIB, Gpu, Hardware

Severity = Literal["fail", "warn", "info"]
ArchFit = Literal["native", "ptx", "missing", "unknown"]
SETUP_GPU = "hermesd setup-gpu"
ALLOW_CPU = "--allow-cpu (HERMESD_ALLOW_CPU=1)"


@dataclass(frozen=True)
class Problem:
    code: str  # cpu_only_engine | no_cuda_devices | missing_arch | ptx_only | not_seen | order | by_position
    severity: Severity
    message: str
    fix: str = ""


@dataclass(frozen=True)
class GpuMatch:
    gpu: Gpu  # NVML's view; gpu.index is NVML's number
    device: EngineDevice
    engine_index: int  # position in llama.cpp's GPU list: the index of tensor_split and main_gpu
    arch: ArchFit


@dataclass(frozen=True)
class GpuAccess:
    hardware: Hardware
    engine: EngineCapabilities
    matches: tuple[GpuMatch, ...]  # every GPU both sides see, in llama.cpp's order
    problems: tuple[Problem, ...]

    @property
    def usable(self) -> tuple[GpuMatch, ...]:
        return tuple(m for m in self.matches if m.arch != "missing")

    @property
    def blocked(self) -> bool:
        """NVML sees GPUs and the engine can use none of them."""
        return bool(self.hardware.gpus) and not self.usable

    def failures(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "fail")

    def planning_hardware(self) -> Hardware:
        """The machine as the engine can use it: only the usable GPUs, in llama.cpp's order (so the
        planner's tensor_split lines up with the engine's devices); NVML's numbers stay for display."""
        gpus = tuple(m.gpu for m in self.usable)
        if gpus == self.hardware.gpus:
            return self.hardware
        notes = tuple(p.message for p in self.problems if p.severity != "info")
        return replace(self.hardware, gpus=gpus, notes=(*self.hardware.notes, *notes))

    def tensor_split(self, planned: Sequence[float] = ()) -> tuple[float, ...]:
        """llama.cpp's tensor_split (one entry per engine GPU) for a plan made on
        `planning_hardware()`: `planned` is the planner's split over the usable GPUs (empty for one
        GPU, or to split by free memory). Empty when llama.cpp's own default does the same."""
        n = len(self.engine.gpu_devices)
        usable = self.usable
        if n == 0 or not usable:
            return ()
        if planned and len(planned) == len(usable):
            weights = [float(w) for w in planned]
        elif len(usable) == 1:
            weights = [1.0]
        else:
            weights = [float(m.device.memory_free_bytes or m.gpu.memory_free_mib * MIB) for m in usable]
        out = [0.0] * n
        for m, w in zip(usable, weights, strict=True):
            out[m.engine_index] = w
        everyone = len(usable) == n
        if everyone and not planned:
            return ()  # llama.cpp splits by free memory itself
        return tuple(out)

    def refusal(self) -> str:
        """One message for `serve` when NVML sees GPUs that the engine cannot use."""
        gpus = ", ".join(
            f"GPU {g.index} {g.name} ({g.memory_total_mib / 1024:.0f} GiB)" for g in self.hardware.gpus
        )
        why = " ".join(p.message for p in self.failures())
        return (
            f"this machine has {len(self.hardware.gpus)} NVIDIA GPU(s) ({gpus}) but the installed llama.cpp "
            f"engine (llama-cpp-python {self.engine.llama_cpp_python}, backends: "
            f"{', '.join(self.engine.backends) or 'none'}) cannot use them, so every layer would run on "
            f"the CPU. {why} Either run `{SETUP_GPU}` once to rebuild the engine with CUDA for these GPUs, "
            f"or pass {ALLOW_CPU} to serve a plan sized for the CPU"
        )

    def banner(self) -> str:
        """The same for `plan`, which goes on and plans for the CPU."""
        return (
            f"The installed llama.cpp engine cannot use this machine's {len(self.hardware.gpus)} GPU(s) "
            f"(backends: {', '.join(self.engine.backends) or 'none'}): this plan is for the CPU. "
            + " ".join(p.message for p in self.failures())
            + f" Run `{SETUP_GPU}` to build the engine with CUDA; `hermesd serve` refuses to start until "
            f"then unless given {ALLOW_CPU}."
        )


def gpu_access(hardware: Hardware, engine: EngineCapabilities) -> GpuAccess:
    devices = engine.gpu_devices
    if not hardware.gpus:
        return GpuAccess(hardware, engine, (), ())
    if not devices:
        return GpuAccess(hardware, engine, (), (_no_devices(hardware, engine),))
    problems: list[Problem] = []
    pairs = _pair(hardware.gpus, devices, problems)
    if engine.source != "probed":  # a profile's engine sees its GPUs in order by definition
        problems = [p for p in problems if p.code != "by_position"]
    matches: list[GpuMatch] = []
    for gpu, k in pairs:
        fit = (
            arch_fit(gpu.compute_capability, engine.cuda_archs) if devices[k].backend == "CUDA" else "unknown"
        )
        matches.append(GpuMatch(gpu, devices[k], k, fit))
        if fit == "missing":
            problems.append(
                Problem(
                    "missing_arch",
                    "fail",
                    f"GPU {gpu.index} ({gpu.name}) has compute capability {gpu.compute_capability}, but this "
                    f"llama.cpp was built for CUDA architectures {', '.join(engine.cuda_archs)} only: "
                    "it has no code that runs there.",
                    f"{SETUP_GPU} (builds for {arch_of(gpu.compute_capability)})",
                )
            )
        elif fit == "ptx":
            problems.append(
                Problem(
                    "ptx_only",
                    "warn",
                    f"GPU {gpu.index} ({gpu.name}, compute capability {gpu.compute_capability}) runs only if "
                    f"the build embedded PTX for an older architecture ({', '.join(engine.cuda_archs)}): the "
                    "first start compiles it just in time, and slower kernels may result.",
                    f"{SETUP_GPU} (builds for {arch_of(gpu.compute_capability)})",
                )
            )
    matches.sort(key=lambda m: m.engine_index)
    nvml_order = [m.gpu.index for m in matches]
    if nvml_order != sorted(nvml_order):
        listing = ", ".join(f"llama.cpp {m.device.name} = NVML GPU {m.gpu.index}" for m in matches)
        problems.append(
            Problem(
                "order",
                "info",
                f"llama.cpp numbers the GPUs differently from NVML ({listing}); hermesd maps the split by "
                "PCI bus id.",
            )
        )
    if not any(m.arch != "missing" for m in matches) and not any(p.severity == "fail" for p in problems):
        problems.append(Problem("not_seen", "fail", "llama.cpp sees none of these GPUs.", SETUP_GPU))
    return GpuAccess(hardware, engine, tuple(matches), tuple(problems))


def _no_devices(hw: Hardware, engine: EngineCapabilities) -> Problem:
    names = ", ".join(sorted({g.name for g in hw.gpus}))
    if engine.gpu_backends:
        backend = engine.gpu_backends[0]
        driver = f"the driver supports CUDA {hw.cuda_version}" if hw.cuda_version else "the driver"
        return Problem(
            "no_cuda_devices",
            "fail",
            f"llama.cpp was built with {backend} but its {backend} backend sees no device (NVML sees "
            f"{len(hw.gpus)}: {names}): {driver} may be older than the toolkit the engine was built with, "
            "or CUDA_VISIBLE_DEVICES hides the GPUs.",
            f"update the NVIDIA driver, check CUDA_VISIBLE_DEVICES, or rebuild for this driver: {SETUP_GPU}",
        )
    return Problem(
        "cpu_only_engine",
        "fail",
        f"NVML sees {len(hw.gpus)} GPU(s) ({names}) but this llama.cpp build has no GPU backend "
        f"(only {', '.join(engine.backends) or 'none'}): pip built it for the CPU.",
        f"{SETUP_GPU}, or {ALLOW_CPU} to serve on the CPU",
    )


def _pair(
    gpus: Sequence[Gpu], devices: Sequence[EngineDevice], problems: list[Problem]
) -> list[tuple[Gpu, int]]:
    """(NVML GPU, engine GPU index) pairs: by PCI bus id where both sides have one, else by position."""
    by_bus = {normalize_pci_bus_id(d.pci_bus_id): k for k, d in enumerate(devices) if d.pci_bus_id}
    if all(g.pci_bus_id for g in gpus) and by_bus:
        pairs: list[tuple[Gpu, int]] = []
        for g in gpus:
            k = by_bus.get(normalize_pci_bus_id(g.pci_bus_id))
            if k is None:
                problems.append(
                    Problem(
                        "not_seen",
                        "warn",
                        f"GPU {g.index} ({g.name}, PCI {g.pci_bus_id}) is not visible to llama.cpp "
                        "(CUDA_VISIBLE_DEVICES, or a driver/toolkit mismatch): it is left out of the plan.",
                        "check CUDA_VISIBLE_DEVICES and `hermesd doctor`",
                    )
                )
                continue
            pairs.append((g, k))
        return pairs
    if len(gpus) != len(devices):
        problems.append(
            Problem(
                "not_seen",
                "warn",
                f"NVML sees {len(gpus)} GPU(s) and llama.cpp {len(devices)}, without PCI bus ids to match "
                f"them: hermesd uses the first {min(len(gpus), len(devices))} of each in order.",
            )
        )
    elif len(gpus) > 1:
        problems.append(
            Problem(
                "by_position", "info", "GPUs matched to llama.cpp's devices by position (no PCI bus ids)."
            )
        )
    return [(g, k) for k, g in enumerate(gpus[: len(devices)])]


def arch_of(compute_capability: str | None) -> str:
    """ "8.6" -> "86" (CMake's CUDA_ARCHITECTURES spelling)."""
    if not compute_capability:
        return "?"
    major, _, minor = compute_capability.partition(".")
    return f"{major}{minor or '0'}"


def arch_fit(compute_capability: str | None, archs: Sequence[str]) -> ArchFit:
    """Whether a build for `archs` has code for a GPU: native code of the same major version and a
    minor version not above the GPU's runs ("native"); code for an older major runs only as PTX
    compiled just in time ("ptx"); nothing at or below the GPU's capability cannot run ("missing")."""
    if not compute_capability or not archs:
        return "unknown"
    try:
        major, _, minor = compute_capability.partition(".")
        gpu = (int(major), int(minor or 0))
        built = [(int(a.rstrip("afv")) // 10, int(a.rstrip("afv")) % 10) for a in archs]
    except ValueError:
        return "unknown"
    if any(b[0] == gpu[0] and b[1] <= gpu[1] for b in built):
        return "native"
    if any(b <= gpu for b in built):
        return "ptx"
    return "missing"


def simulated_engine(hw: Hardware) -> EngineCapabilities | None:
    """The engine a profile's `engine` section describes (None without one): its GPU backend sees
    every GPU of the profile, in the profile's order, unless `gpu_offload` is false."""
    spec = hw.engine
    if spec is None:
        return None
    devices = [EngineDevice("CPU", "CPU", "cpu", "CPU", hw.ram_total_mib * MIB, hw.ram_total_mib * MIB)]
    gpu_backend = next((b for b in spec.backends if b.upper() != "CPU"), None)
    if spec.gpu_offload and gpu_backend:
        devices += [
            EngineDevice(
                f"{gpu_backend}{k}",
                g.name,
                "gpu",
                gpu_backend,
                g.memory_free_mib * MIB,
                g.memory_total_mib * MIB,
                g.pci_bus_id,
            )
            for k, g in enumerate(hw.gpus)
        ]
    return EngineCapabilities(
        llama_cpp_python="(profile)",
        backends=spec.backends,
        devices=tuple(devices),
        gpu_offload=spec.gpu_offload,
        cuda_archs=spec.cuda_archs,
        source=hw.source,
    )
