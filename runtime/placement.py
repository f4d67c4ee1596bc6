"""Put one model (variant + quant + context) on one machine: which layers go to which device.

Follows llama.cpp's placement rules (llama-model.cpp, load_tensors):
- `token_embd` always stays on the CPU;
- with n_gpu_layers = k <= n_layer, the LAST k repeating layers go to the GPUs and the output
  layer stays on the CPU; only n_gpu_layers = n_layer + 1 (or -1) puts the output on a GPU too;
- the GPU layers are cut into consecutive runs, one per GPU in index order, by `tensor_split`;
  the output layer counts as one more unit on the last GPU;
- each layer's KV cache lives on the device of the layer (offload_kqv, the default).

Across hosts (llama.cpp RPC workers, `Hardware.workers`), llama.cpp's default device list puts the
RPC devices FIRST (workers in registration order, each worker's devices in its order), then the
local GPUs (src/llama.cpp, default device selection); this llama.cpp counts the output layer as the
first of the n_gpu_layers units (llama-model.cpp: i_gpu_start = n_layer + 1 - n_gpu_layers), so the
first layers stay on the local CPU, then come whole runs per device in that order, and the output
layer goes with the last device that holds layers. `place_across` plans exactly that.
Everything here is arithmetic on numbers; nothing touches a device.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hermesd.models.catalog import Variant, WeightLayout
from hermesd.runtime.engine.context_settings import ContextSettings
from hermesd.runtime.hardware import Hardware
from hermesd.runtime.memory import (
    MIB,
    compute_bytes,
    host_buffer_bytes,
    kv_bytes_per_layer,
    largest_layer_tensor_bytes,
)

# The link to the workers, for the speed estimate only (no profile says better yet): a 1 Gbit/s
# LAN with 0.5 ms per round trip. Decode sends one token's activations across every host boundary.
NETWORK_GBPS = 1.0
NETWORK_RTT_S = 0.0005


@dataclass(frozen=True)
class Budget:
    """The knobs of a placement that are not the model or the machine."""

    settings: ContextSettings  # the llama.cpp context serve will run
    gpu_margin_bytes: int
    cpu_margin_bytes: int


@dataclass(frozen=True)
class DeviceUse:
    device: str  # "gpu" | "cpu"
    index: int | None
    name: str
    layers: int
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    margin_bytes: int
    capacity_bytes: int
    holds_output: bool = False
    bandwidth_gbps: float = 0.0
    host: str | None = None  # None: this machine; else the worker's "HOST:PORT"

    @property
    def bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.margin_bytes

    @property
    def offload(self) -> bool:
        """A device llama.cpp offloads layers to (a local GPU or any worker's device), not this
        machine's CPU."""
        return self.host is not None or self.device == "gpu"


@dataclass(frozen=True)
class Placement:
    fits: bool
    # llama.cpp's order: the workers' devices, the local GPUs in index order, then the local CPU
    devices: tuple[DeviceUse, ...]
    gpu_layers: int  # repeating layers on offload devices (GPUs, and workers' devices)
    full_offload: bool  # every layer on a GPU (local or a worker's), none in RAM
    kv_per_layer: int
    cells: int
    missing_bytes: int  # > 0 when it does not fit: how much more RAM would make it fit
    tokens_per_s: float
    workers: tuple[str, ...] = ()  # addresses of the workers used, in llama.cpp's device order
    network_s: float = 0.0  # the part of a token's time spent on the network (in tokens_per_s)

    @property
    def output_offloaded(self) -> bool:
        # Across hosts the output layer always goes with the last device (module doc).
        return self.full_offload or bool(self.workers)

    @property
    def n_gpu_layers(self) -> int:
        """The value for llama.cpp: layers + 1 when the output layer is offloaded too."""
        return self.gpu_layers + (1 if self.output_offloaded else 0)

    def tensor_split(self) -> tuple[float, ...]:
        """Units per offload device (layers, plus the output layer on the device holding it), in
        llama.cpp's order: the workers' devices first, then the local GPUs."""
        devices = [d for d in self.devices if d.offload]
        if len(devices) < 2:
            return ()
        return tuple(float(d.layers + (1 if d.holds_output else 0)) for d in devices)


def place(variant: Variant, layout: WeightLayout, hw: Hardware, budget: Budget) -> Placement:
    """Full GPU offload if it fits, else as many layers on the GPUs as fit and the rest in RAM.
    With `hw.workers`, every worker given is used (the planner chooses which): `place_across`."""
    if hw.workers:
        return place_across(variant, layout, hw, budget)
    cells = budget.settings.kv_cells
    kv_layer = kv_bytes_per_layer(variant, cells, budget.settings.kv_type)
    costs = [w + kv_layer for w in layout.layer_bytes]
    n = len(costs)
    comp_out = compute_bytes(variant, budget.settings, with_output=True)
    comp_mid = compute_bytes(variant, budget.settings, with_output=False)
    free = [g.memory_free_mib * MIB for g in hw.gpus]

    counts = _full_split(costs, layout.output_bytes, free, comp_mid, comp_out, budget.gpu_margin_bytes)
    if counts is not None:
        return _result(variant, layout, hw, budget, counts, True, kv_layer, cells, comp_mid, comp_out)

    # Partial offload: the output layer stays on the CPU, and each GPU also needs room for one
    # CPU-resident weight matrix that llama.cpp copies over for large prompt batches.
    extra = largest_layer_tensor_bytes(variant, max(layout.layer_bytes, default=0))
    budgets = [f - budget.gpu_margin_bytes - comp_mid - extra for f in free]
    counts = [0] * len(free)
    for k in range(n, 0, -1):
        fill = _fill(costs[n - k :], budgets)
        if fill is not None:
            counts = fill
            break
    return _result(variant, layout, hw, budget, counts, False, kv_layer, cells, comp_mid, comp_out)


def _full_split(
    costs: list[int], output: int, free: list[int], comp_mid: int, comp_out: int, margin: int
) -> list[int] | None:
    """Layers per GPU when everything fits on the GPUs, in proportion to what each can hold.

    The last GPU used also holds the output layer and the logits; when no split works with a GPU
    in that role, the planner tries again without it (llama.cpp gets a 0 for it in tensor_split).
    """
    usable = [i for i, f in enumerate(free) if f - margin - comp_mid > (costs[0] if costs else 0)]
    while usable:
        last = usable[-1]
        caps = {i: free[i] - margin - (comp_out + output if i == last else comp_mid) for i in usable}
        if caps[last] > 0:
            counts = _proportional(costs, usable, caps)
            if counts is not None:
                return [counts.get(i, 0) for i in range(len(free))]
        usable.pop()
    return None


def _proportional(costs: list[int], order: list[int], caps: dict[int, int]) -> dict[int, int] | None:
    """Consecutive runs of layers, one per GPU in `order`, sized in proportion to `caps`, with
    boundaries moved until every run fits. The last GPU must keep at least one layer."""
    n = len(costs)
    total_cap = sum(max(c, 0) for c in caps.values())
    if sum(costs) > total_cap:
        return None
    raw = {i: n * max(caps[i], 0) / total_cap for i in order}
    target = {i: int(raw[i]) for i in order}
    for i in sorted(order, key=lambda i: raw[i] - target[i], reverse=True)[: n - sum(target.values())]:
        target[i] += 1
    last = order[-1]
    for _ in range(n * len(order) + 1):
        if target[last] == 0:
            return None
        start, loads = 0, {}
        for i in order:
            loads[i] = sum(costs[start : start + target[i]])
            start += target[i]
        over = next((i for i in order if loads[i] > caps[i]), None)
        if over is None:
            return target
        # Give one layer to the neighbour with the most room left.
        pos = order.index(over)
        room = {j: caps[j] - loads[j] for j in (order[k] for k in (pos - 1, pos + 1) if 0 <= k < len(order))}
        best = max(room, key=lambda j: room[j], default=None)
        if best is None or room[best] <= 0 or target[over] == 0:
            return None
        target[over] -= 1
        target[best] += 1
    return None


def _fill(costs: list[int], budgets: list[int]) -> list[int] | None:
    """Consecutive layers packed into GPUs in order, each filled before the next; None if some
    layers are left over."""
    counts = [0] * len(budgets)
    i = 0
    for g, cap in enumerate(budgets):
        used = 0
        while i < len(costs) and used + costs[i] <= cap:
            used += costs[i]
            counts[g] += 1
            i += 1
    return counts if i == len(costs) else None


def _result(
    variant: Variant,
    layout: WeightLayout,
    hw: Hardware,
    budget: Budget,
    counts: list[int],
    full: bool,
    kv_layer: int,
    cells: int,
    comp_mid: int,
    comp_out: int,
) -> Placement:
    n = len(layout.layer_bytes)
    on_gpu = sum(counts)
    last_used = max((i for i, c in enumerate(counts) if c > 0), default=None)
    devices: list[DeviceUse] = []
    start = n - on_gpu
    extra = 0 if full else largest_layer_tensor_bytes(variant, max(layout.layer_bytes, default=0))
    for i, g in enumerate(hw.gpus):
        c = counts[i] if i < len(counts) else 0
        holds_output = full and i == last_used
        weights = sum(layout.layer_bytes[start : start + c]) + (layout.output_bytes if holds_output else 0)
        start += c
        used = c > 0
        devices.append(
            DeviceUse(
                device="gpu",
                index=g.index,
                name=g.name,
                layers=c,
                weights_bytes=weights,
                kv_bytes=c * kv_layer,
                compute_bytes=((comp_out if holds_output else comp_mid) + extra) if used else 0,
                margin_bytes=budget.gpu_margin_bytes if used else 0,
                capacity_bytes=g.memory_free_mib * MIB,
                holds_output=holds_output,
                bandwidth_gbps=g.bandwidth_gbps(),
            )
        )
    cpu_layers = n - on_gpu
    cpu_weights = (
        sum(layout.layer_bytes[:cpu_layers])
        + layout.token_embd_bytes
        + layout.other_bytes
        + (0 if full else layout.output_bytes)
    )
    cpu = DeviceUse(
        device="cpu",
        index=None,
        name="CPU RAM",
        layers=cpu_layers,
        weights_bytes=cpu_weights,
        kv_bytes=cpu_layers * kv_layer,
        compute_bytes=host_buffer_bytes(variant, n_ubatch=budget.settings.n_ubatch) if full else comp_out,
        margin_bytes=budget.cpu_margin_bytes,
        capacity_bytes=hw.ram_available_mib * MIB,
        holds_output=not full,
        bandwidth_gbps=hw.ram_bandwidth(),
    )
    devices.append(cpu)
    missing = max(cpu.bytes - cpu.capacity_bytes, 0)
    return Placement(
        fits=missing == 0,
        devices=tuple(devices),
        gpu_layers=on_gpu,
        full_offload=full,
        kv_per_layer=kv_layer,
        cells=cells,
        missing_bytes=missing,
        tokens_per_s=_speed(devices, layout),
    )


@dataclass(frozen=True)
class _Slot:
    """A device llama.cpp offloads to, in its order."""

    host: str | None
    kind: str  # "gpu" | "cpu"
    index: int  # the GPU's index here; the position in the worker's device list there
    name: str
    free_bytes: int
    bandwidth_gbps: float


def offload_slots(hw: Hardware) -> list[_Slot]:
    """llama.cpp's default device list: the workers' devices in registration order, then the
    local GPUs (src/llama.cpp: "add RPC servers at the front of the list")."""
    remote = [
        _Slot(w.address, d.kind, i, d.name, d.memory_free_mib * MIB, d.bandwidth_gbps())
        for w in hw.workers
        for i, d in enumerate(w.devices)
    ]
    local = [
        _Slot(None, "gpu", g.index, g.name, g.memory_free_mib * MIB, g.bandwidth_gbps()) for g in hw.gpus
    ]
    return remote + local


def place_across(variant: Variant, layout: WeightLayout, hw: Hardware, budget: Budget) -> Placement:
    """Layers over this host and all of `hw.workers`: the fewest layers in local RAM such that the
    rest, cut into whole runs per device in llama.cpp's order (in proportion to free memory), fit;
    the output layer on the last device. When every device is RAM (CPU workers, no GPU) none is
    faster than this host's, so this host takes its share in proportion to memory where it has the
    room. Without room for one layer on the devices: `place` without workers."""
    cells = budget.settings.kv_cells
    kv_layer = kv_bytes_per_layer(variant, cells, budget.settings.kv_type)
    costs = [w + kv_layer for w in layout.layer_bytes]
    n = len(costs)
    comp_out = compute_bytes(variant, budget.settings, with_output=True)
    comp_mid = compute_bytes(variant, budget.settings, with_output=False)
    slots = offload_slots(hw)
    margin = budget.gpu_margin_bytes
    # With layers in local RAM, local GPUs need room for one of their weight matrices (see place).
    extra = largest_layer_tensor_bytes(variant, max(layout.layer_bytes, default=0))
    spare = [s.free_bytes - (extra if s.host is None else 0) for s in slots]

    def split(c: int) -> list[int] | None:
        free = spare if c else [s.free_bytes for s in slots]
        return _full_split(costs[c:], layout.output_bytes, free, comp_mid, comp_out, margin)

    def local_fits(c: int) -> bool:
        compute = comp_mid if c else host_buffer_bytes(variant, n_ubatch=budget.settings.n_ubatch)
        weights = sum(layout.layer_bytes[:c]) + layout.token_embd_bytes + layout.other_bytes
        return weights + c * kv_layer + compute + budget.cpu_margin_bytes <= hw.ram_available_mib * MIB

    if split(0) is not None:
        lo = 0
    elif n < 2 or split(n - 1) is None:
        return place(variant, layout, replace(hw, workers=()), budget)
    else:
        lo, hi = 1, n - 1  # split(hi) works; fewer layers in RAM is monotonically harder
        while lo < hi:
            mid = (lo + hi) // 2
            if split(mid) is not None:
                hi = mid
            else:
                lo = mid + 1
    cpu_layers = lo
    if not any(s.kind == "gpu" for s in slots):
        ram = hw.ram_available_mib * MIB
        share = round(n * ram / (ram + sum(s.free_bytes for s in slots)))
        cpu_layers = next((c for c in range(min(share, n - 1), lo, -1) if local_fits(c)), lo)
    counts = split(cpu_layers)
    if counts is None:  # the proportional split's boundary moves are a heuristic: keep the tested one
        cpu_layers, counts = lo, split(lo)
    if counts is None:
        return place(variant, layout, replace(hw, workers=()), budget)
    return _result_across(
        variant,
        layout,
        hw,
        budget,
        slots,
        counts,
        cpu_layers,
        kv_layer,
        cells,
        comp_mid,
        comp_out,
        extra if cpu_layers else 0,
    )


def _result_across(
    variant: Variant,
    layout: WeightLayout,
    hw: Hardware,
    budget: Budget,
    slots: list[_Slot],
    counts: list[int],
    cpu_layers: int,
    kv_layer: int,
    cells: int,
    comp_mid: int,
    comp_out: int,
    extra: int,
) -> Placement:
    last_used = max(i for i, c in enumerate(counts) if c > 0)
    used_hosts = {s.host for s, c in zip(slots, counts, strict=True) if c > 0 and s.host is not None}
    devices: list[DeviceUse] = []
    start = cpu_layers
    for i, (s, c) in enumerate(zip(slots, counts, strict=True)):
        if s.host is not None and s.host not in used_hosts:
            continue  # a worker left without layers is not registered at all
        holds_output = i == last_used
        weights = sum(layout.layer_bytes[start : start + c]) + (layout.output_bytes if holds_output else 0)
        start += c
        used = c > 0
        local_extra = extra if s.host is None else 0
        devices.append(
            DeviceUse(
                device="gpu" if s.kind == "gpu" else "cpu",
                index=s.index,
                name=s.name,
                layers=c,
                weights_bytes=weights,
                kv_bytes=c * kv_layer,
                compute_bytes=((comp_out if holds_output else comp_mid) + local_extra) if used else 0,
                margin_bytes=budget.gpu_margin_bytes if used else 0,
                capacity_bytes=s.free_bytes,
                holds_output=holds_output,
                bandwidth_gbps=s.bandwidth_gbps,
                host=s.host,
            )
        )
    cpu = DeviceUse(
        device="cpu",
        index=None,
        name="CPU RAM",
        layers=cpu_layers,
        weights_bytes=sum(layout.layer_bytes[:cpu_layers]) + layout.token_embd_bytes + layout.other_bytes,
        kv_bytes=cpu_layers * kv_layer,
        compute_bytes=(
            comp_mid if cpu_layers else host_buffer_bytes(variant, n_ubatch=budget.settings.n_ubatch)
        ),
        margin_bytes=budget.cpu_margin_bytes,
        capacity_bytes=hw.ram_available_mib * MIB,
        bandwidth_gbps=hw.ram_bandwidth(),
    )
    devices.append(cpu)
    workers = tuple(w.address for w in hw.workers if w.address in used_hosts)
    network = network_seconds(variant, workers, output_remote=slots[last_used].host is not None)
    compute_s = 1.0 / _speed(devices, layout)
    missing = max(cpu.bytes - cpu.capacity_bytes, 0)
    return Placement(
        fits=missing == 0,
        devices=tuple(devices),
        gpu_layers=len(layout.layer_bytes) - cpu_layers,
        full_offload=cpu_layers == 0 and all(d.device == "gpu" for d in devices if d.offload and d.layers),
        kv_per_layer=kv_layer,
        cells=cells,
        missing_bytes=missing,
        tokens_per_s=1.0 / (compute_s + network),
        workers=workers,
        network_s=network,
    )


def network_seconds(variant: Variant, workers: tuple[str, ...], *, output_remote: bool) -> float:
    """The network's share of one decoded token: the activations go from this host through each
    worker and back (len(workers) + 1 host boundaries, each a round trip of NETWORK_RTT_S plus the
    bytes at NETWORK_GBPS): hidden_size f32 values per boundary, and the logits (vocab_size f32) on
    the way back when the output layer is on a worker. Prompt processing is not modelled."""
    if not workers:
        return 0.0
    hops = len(workers) + 1
    activations = variant.hidden_size * 4
    last = variant.vocab_size * 4 if output_remote else activations
    sent = activations * (hops - 1) + last
    return hops * NETWORK_RTT_S + sent * 8 / (NETWORK_GBPS * 1e9)


def _speed(devices: list[DeviceUse], layout: WeightLayout) -> float:
    """Decode is memory-bound: each token reads every weight once (token_embd only one row), and
    with a layer split the devices work one after the other. Upper bound at short context."""
    seconds = 0.0
    for d in devices:
        local_cpu = not d.offload
        read = d.weights_bytes - (layout.token_embd_bytes + layout.other_bytes if local_cpu else 0)
        if read > 0 and d.bandwidth_gbps > 0:
            seconds += read / (d.bandwidth_gbps * 1e9)
    return 1.0 / seconds if seconds > 0 else float("inf")
