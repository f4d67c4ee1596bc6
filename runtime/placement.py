"""Put one model (variant + quant + context) on one machine: which layers go to which device.

Follows llama.cpp's placement rules (llama-model.cpp, load_tensors):
- `token_embd` always stays on the CPU;
- with n_gpu_layers = k <= n_layer, the LAST k repeating layers go to the GPUs and the output
  layer stays on the CPU; only n_gpu_layers = n_layer + 1 (or -1) puts the output on a GPU too;
- the GPU layers are cut into consecutive runs, one per GPU in index order, by `tensor_split`;
  the output layer counts as one more unit on the last GPU;
- each layer's KV cache lives on the device of the layer (offload_kqv, the default).
Everything here is arithmetic on numbers; nothing touches a device.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    @property
    def bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.margin_bytes


@dataclass(frozen=True)
class Placement:
    fits: bool
    devices: tuple[DeviceUse, ...]  # GPUs in index order, then the CPU
    gpu_layers: int  # repeating layers on GPUs
    full_offload: bool
    kv_per_layer: int
    cells: int
    missing_bytes: int  # > 0 when it does not fit: how much more RAM would make it fit
    tokens_per_s: float

    @property
    def n_gpu_layers(self) -> int:
        """The value for llama.cpp: layers + 1 when the output layer is offloaded too."""
        return self.gpu_layers + (1 if self.full_offload else 0)

    def tensor_split(self) -> tuple[float, ...]:
        """Units per GPU (layers, plus the output layer on the last GPU when fully offloaded)."""
        gpus = [d for d in self.devices if d.device == "gpu"]
        if len(gpus) < 2:
            return ()
        return tuple(float(d.layers + (1 if d.holds_output else 0)) for d in gpus)


def place(variant: Variant, layout: WeightLayout, hw: Hardware, budget: Budget) -> Placement:
    """Full GPU offload if it fits, else as many layers on the GPUs as fit and the rest in RAM."""
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


def _speed(devices: list[DeviceUse], layout: WeightLayout) -> float:
    """Decode is memory-bound: each token reads every weight once (token_embd only one row), and
    with a layer split the devices work one after the other. Upper bound at short context."""
    seconds = 0.0
    for d in devices:
        read = d.weights_bytes - (layout.token_embd_bytes + layout.other_bytes if d.device == "cpu" else 0)
        if read > 0 and d.bandwidth_gbps > 0:
            seconds += read / (d.bandwidth_gbps * 1e9)
    return 1.0 / seconds if seconds > 0 else float("inf")
