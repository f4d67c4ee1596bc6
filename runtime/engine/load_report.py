"""llama.cpp's own account of a load: where the layers went and how much memory each device holds.

llama-cpp-python 0.3.36 has no call that returns the placement (`llama_get_memory_breakdown` is C++
only), but llama.cpp logs it while loading: one debug line per layer ("layer 3 assigned to device
CUDA0"), whether the output layer was offloaded, and one line per buffer ("CUDA0 model buffer size =
… MiB", "… KV buffer size", "… compute buffer size"). `parse_load_log` turns those lines into a
`LoadReport`; `check_offload` makes a plan that put layers on a GPU, and got none there, an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from hermesd.models.catalog import Variant
from hermesd.runtime.engine.context_settings import ContextSettings
from hermesd.runtime.engine.protocol import DeviceUse
from hermesd.runtime.errors import ModelLoadError
from hermesd.runtime.memory import compute_bytes, host_buffer_bytes, kv_bytes

_LAYER_RE = re.compile(r"layer\s+(\d+) assigned to device (\S+?),")
_BUFFER_RE = re.compile(r"(\S+) (model|KV|compute) buffer size =\s+([\d.]+) MiB")
_OUTPUT_RE = re.compile(r"offloading output layer to GPU")
_OFFLOADED_RE = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
# "using device RPC0 (10.0.0.2:50052) (unknown id) - 1234 MiB free": an RPC worker's device
_REMOTE_RE = re.compile(r"using device (RPC\d+) \(([^)\s]+)\)")
# its buffers are named by the device's index on that worker: "RPC0[10.0.0.2:50052] model buffer"
_REMOTE_BUFFER_RE = re.compile(r"RPC(\d+)\[([^\]]+)\]")
HOST = "CPU"
MIB = 1024 * 1024


class OffloadError(ModelLoadError):
    """The plan put layers on a GPU and llama.cpp placed none there: an error, not a slow daemon.
    Retrying with fewer GPU layers would not help, so the load fallback does not retry it."""


@dataclass
class LoadReport:
    # device -> layers, the output layer counted as one more as llama.cpp does (n_layer + 1 in all)
    layers: dict[str, int] = field(default_factory=dict)
    memory: dict[str, dict[str, int]] = field(default_factory=dict)  # device -> kind -> bytes
    output_offloaded: bool = False
    offloaded: tuple[int, int] | None = None  # llama.cpp's "offloaded N/M layers" line
    hosts: dict[str, str] = field(default_factory=dict)  # RPC device -> its worker's HOST:PORT

    def gpu_layers(self, cpu_names: Sequence[str] = (HOST,)) -> int:
        return sum(n for dev, n in self.layers.items() if dev not in cpu_names)

    def devices(self, kinds: Mapping[str, str] | None = None) -> tuple[DeviceUse, ...]:
        names = list(dict.fromkeys([*self.layers, *self.memory]))
        kinds = kinds or {}
        return tuple(
            DeviceUse(
                name=n,
                kind=kinds.get(n, "cpu" if n == HOST else "gpu"),
                layers=self.layers.get(n, 0),
                model_bytes=self.memory.get(n, {}).get("model", 0),
                kv_bytes=self.memory.get(n, {}).get("KV", 0),
                compute_bytes=self.memory.get(n, {}).get("compute", 0),
            )
            for n in names
        )


def buffer_device(buffer: str, device_names: Sequence[str]) -> str:
    """The device a llama.cpp buffer lives on: "CUDA0" and "CUDA0_Split" are on CUDA0; host
    buffers ("CPU", "CPU_Mapped", "CPU_REPACK", "CUDA_Host") are in RAM."""
    if buffer in device_names:
        return buffer
    head = buffer.split("_")[0]
    if head in device_names and head != HOST:
        return head
    return HOST


def parse_load_log(lines: Iterable[str], device_names: Sequence[str] = ()) -> LoadReport:
    report = LoadReport()
    for line in lines:
        if m := _LAYER_RE.search(line):
            dev = m.group(2)
            report.layers[dev] = report.layers.get(dev, 0) + 1
        elif m := _BUFFER_RE.search(line):
            buffer = m.group(1)
            dev = _remote_device(report.hosts, buffer) or buffer_device(buffer, device_names or [buffer])
            per = report.memory.setdefault(dev, {})
            per[m.group(2)] = per.get(m.group(2), 0) + round(float(m.group(3)) * MIB)
        elif _OUTPUT_RE.search(line):
            report.output_offloaded = True
        elif m := _OFFLOADED_RE.search(line):
            report.offloaded = (int(m.group(1)), int(m.group(2)))
        elif m := _REMOTE_RE.search(line):
            report.hosts[m.group(1)] = m.group(2)
    return report


def _remote_device(hosts: Mapping[str, str], buffer: str) -> str | None:
    m = _REMOTE_BUFFER_RE.fullmatch(buffer)
    if m is None:
        return None
    on_host = [dev for dev, host in hosts.items() if host == m.group(2)]
    index = int(m.group(1))
    return on_host[index] if index < len(on_host) else None


def check_offload(report: LoadReport, *, requested_gpu_layers: int, gpu_names: Sequence[str]) -> list[str]:
    """Raise OffloadError when GPU layers were asked for, the engine has GPUs, and none landed on
    one; return warnings for a placement that differs from the request."""
    if not gpu_names or requested_gpu_layers == 0:
        return []
    on_gpu = sum(report.layers.get(n, 0) for n in [*gpu_names, *report.hosts])  # RPC workers' too
    total = sum(report.layers.values())
    if on_gpu == 0 and total > 0:
        asked = "every layer" if requested_gpu_layers < 0 else f"{requested_gpu_layers} layers"
        raise OffloadError(
            f"the plan put {asked} on the GPU(s) ({', '.join(gpu_names)}) but llama.cpp placed all {total} "
            "layers on the CPU; run `hermesd doctor` to see why (driver, CUDA architectures, "
            "CUDA_VISIBLE_DEVICES)"
        )
    wanted = total if requested_gpu_layers < 0 else min(requested_gpu_layers, total)
    if total and on_gpu < wanted:
        return [f"llama.cpp placed {on_gpu} of the {wanted} layers planned for the GPUs there"]
    return []


def describe(report: LoadReport, backends: Sequence[str]) -> str:
    """The start-up log line: backend, layers and memory per device."""
    parts = []
    for d in report.devices():
        mem = d.model_bytes + d.kv_bytes + d.compute_bytes
        where = f"{d.name} on worker {report.hosts[d.name]}" if d.name in report.hosts else d.name
        parts.append(
            f"{where}: {d.layers} layers, {mem / MIB:.0f} MiB (model {d.model_bytes / MIB:.0f} + KV "
            f"{d.kv_bytes / MIB:.0f} + compute {d.compute_bytes / MIB:.0f})"
        )
    output = "; output layer on GPU" if report.output_offloaded else ""
    return f"engine backends {', '.join(backends) or '?'}; " + "; ".join(parts) + output


def planned_and_allocated(report: LoadReport, variant: Variant, settings: ContextSettings) -> str:
    """The start-up line that puts the planner's KV and compute figures for these settings beside
    what llama.cpp allocated, in MiB, so a plan that drifted from the engine shows at once."""
    gpus = [d for d in report.devices() if d.kind == "gpu" and d.layers]
    output = gpus[-1].name if report.output_offloaded and gpus else HOST
    planned_compute = 0
    allocated_compute = 0
    for d in report.devices():
        if not d.compute_bytes:
            continue
        allocated_compute += d.compute_bytes
        if d.name == output:
            planned_compute += compute_bytes(variant, settings, with_output=True)
        elif d.name == HOST:  # every layer on the GPUs: the host stages inputs only
            planned_compute += host_buffer_bytes(variant, n_ubatch=settings.n_ubatch)
        else:
            planned_compute += compute_bytes(variant, settings, with_output=False)
    allocated_kv = sum(d.kv_bytes for d in report.devices())
    return (
        f"memory (MiB): KV cache planned {kv_bytes(variant, settings) / MIB:.1f}, allocated "
        f"{allocated_kv / MIB:.1f}; compute buffers planned {planned_compute / MIB:.1f}, allocated "
        f"{allocated_compute / MIB:.1f} ({settings.parallel} x {settings.ctx} tokens, {settings.kv_type} KV)"
    )
