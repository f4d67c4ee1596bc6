"""The planner across hosts (llama.cpp RPC workers): fewest hosts, whole layer ranges per host in
llama.cpp's device order (workers' devices first, then the local GPUs), and the split the engine
gets (`engine_split`), checked against llama.cpp's own layer assignment rule."""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from hermesd.models.catalog import load_catalog
from hermesd.runtime.hardware import Hardware, RemoteDevice, Worker, hardware_from_dict, load_profile
from hermesd.runtime.planner import NoFit, Plan, PlanRequest, engine_split, plan, plan_to_json

CATALOG = load_catalog()
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BOX = load_profile(FIXTURES / "workers" / "box-128gb.json")


def cpu_worker(address: str, free_mib: int = 117964) -> Worker:
    return Worker(address, (RemoteDevice("CPU", "cpu", 131072, free_mib),))


def gpu_worker(address: str, *free_gib: int) -> Worker:
    return Worker(address, tuple(RemoteDevice(f"GPU {g}", "gpu", g * 1024, g * 1024 - 512) for g in free_gib))


def host(gpus_gib: tuple[int, ...] = (), ram_gib: int = 32, workers: tuple[Worker, ...] = ()) -> Hardware:
    gpus = [{"name": f"NVIDIA {g} GB", "memory_total_mib": g * 1024} for g in gpus_gib]
    hw = hardware_from_dict({"gpus": gpus, "ram_total_mib": ram_gib * 1024, "cpu_cores": 8})
    return replace(hw, workers=workers)


W1, W2 = cpu_worker("10.8.0.2:50052"), cpu_worker("10.8.0.3:50052")


def f32(x: float) -> float:
    return float(struct.unpack("f", struct.pack("f", x))[0])


def llama_cpp_devices(
    n_layer: int, n_gpu_layers: int, tensor_split: tuple[float, ...], n_devices: int
) -> list[int]:
    """llama.cpp's assignment (llama-model.cpp, load_tensors), in float32 like the C code: the device
    index of each layer and then of the output layer (index n_layer); -1 is the CPU."""
    splits = list(tensor_split) if any(tensor_split) else [1.0] * n_devices
    total, cum = 0.0, []
    for s in splits:
        total = f32(total + s)
        cum.append(total)
    cum = [f32(c / total) for c in cum]
    i_gpu_start = max(n_layer + 1 - n_gpu_layers, 0)
    act = min(n_gpu_layers, n_layer + 1)
    out = []
    for il in range(n_layer + 1):
        if il < i_gpu_start or il - i_gpu_start >= act:
            out.append(-1)
            continue
        x = f32((il - i_gpu_start) / act)
        out.append(next((j for j, c in enumerate(cum) if x < c), len(cum)))  # std::upper_bound
    return out


def assert_across_hosts(p: Plan, hw: Hardware) -> None:
    """What every plan over several hosts obeys."""
    assert p.workers, "the plan uses workers"
    assert sum(d.layers for d in p.placement) == p.layers_total
    for d in p.placement:
        assert d.bytes == d.weights_bytes + d.kv_bytes + d.compute_bytes + d.margin_bytes
        assert d.bytes <= d.capacity_bytes, d
    local_cpu = p.placement[-1]
    assert local_cpu.host is None and local_cpu.device == "cpu"
    offload = list(p.placement[:-1])
    # llama.cpp's device order: the used workers' devices (in their order), then the local GPUs
    hosts = [d.host for d in offload]
    remote = [h for h in hosts if h is not None]
    assert hosts == remote + [None] * (len(hosts) - len(remote))
    assert list(dict.fromkeys(remote)) == list(p.workers)
    order = [w.address for w in hw.workers]
    assert sorted(p.workers, key=order.index) == list(p.workers)
    for w in hw.workers:
        if w.address in p.workers:
            assert [d.name for d in offload if d.host == w.address] == [d.name for d in w.devices]
    # one output layer, on the last device that holds layers
    holders = [d for d in offload if d.holds_output]
    assert len(holders) == 1 and holders[0] is [d for d in offload if d.layers][-1]
    # what llama.cpp does with the engine split is the plan's placement, layer by layer
    split = engine_split(p)
    assert split.workers == p.workers
    assert split.n_gpu_layers == sum(d.layers for d in offload) + 1
    assert len(split.tensor_split) == len(offload) and sum(split.tensor_split) == split.n_gpu_layers
    expected = [-1] * local_cpu.layers
    for i, d in enumerate(offload):
        expected += [i] * d.layers
    expected.append(offload.index(holders[0]))
    assert llama_cpp_devices(p.layers_total, split.n_gpu_layers, split.tensor_split, len(offload)) == expected
    # every host holds one contiguous range: the hosts along the layers never come back
    along = [None] * local_cpu.layers + [d.host for d in offload for _ in range(d.layers)]
    runs = [h for i, h in enumerate(along) if i == 0 or along[i - 1] != h]
    assert len(runs) == len(set(runs))


def test_405b_does_not_fit_one_128_gb_host() -> None:
    result = plan(BOX, CATALOG, PlanRequest(variant="hermes-4-405b"))
    assert isinstance(result, NoFit)
    assert "GiB missing" in result.reason


def test_405b_q4_k_m_splits_across_three_128_gb_hosts() -> None:
    hw = replace(BOX, workers=(W1, W2))
    p = plan(hw, CATALOG, PlanRequest(variant="hermes-4-405b"))
    assert isinstance(p, Plan), p
    # why: Q4_K_M is ~244 GB (the catalog's estimate for all 18 parts): two hosts' 2 x 115 GiB
    # available do not hold it with 16k of KV cache, three do
    assert (p.variant, p.quant, p.context) == ("hermes-4-405b", "Q4_K_M", 16384)
    assert 240e9 < p.estimate.weights_bytes < 250e9
    assert p.workers == (W1.address, W2.address)
    assert_across_hosts(p, hw)
    assert [d.host for d in p.placement] == [W1.address, W2.address, None]
    # all three are RAM: none is faster, so each host takes a third (126 / 3) of the layers
    assert [d.layers for d in p.placement] == [42, 42, 42]
    assert p.placement[1].holds_output  # no local GPU: the last worker holds the output layer
    assert p.estimate.kv_bytes == sum(d.kv_bytes for d in p.placement)
    assert p.estimate.tokens_per_s < 1  # three RAMs one after another, plus the network
    assert any("network: 3 host boundaries" in line for line in p.arithmetic)


def test_two_128_gb_hosts_are_not_enough_for_405b_q4_k_m() -> None:
    result = plan(replace(BOX, workers=(W1,)), CATALOG, PlanRequest(variant="hermes-4-405b", quant="Q4_K_M"))
    assert isinstance(result, NoFit)
    assert "1 worker(s)" in result.reason


@dataclass(frozen=True)
class HostsRow:
    hw: Hardware
    request: PlanRequest
    workers: tuple[str, ...]
    why: str


SMALL, BIG = gpu_worker("10.8.0.4:50052", 24), gpu_worker("10.8.0.5:50052", 48)
HOSTS = [
    HostsRow(
        replace(BOX, workers=(W1, W2)),
        PlanRequest(variant="hermes-4-70b", quant="Q4_K_M"),
        (),
        "70B Q4_K_M (~42 GB) fits one 128 GB host: the workers stay idle",
    ),
    HostsRow(
        host((24,), 64, (SMALL, BIG)),
        PlanRequest(variant="hermes-4-14b"),
        (),
        "14B fits the local 24 GB GPU: no worker",
    ),
    HostsRow(
        host((), 48, (W1, W2)),
        PlanRequest(variant="hermes-4-70b", quant="Q8_0"),
        (W1.address,),
        "70B Q8_0 (~75 GB) needs one more 128 GB host, not two",
    ),
    HostsRow(
        host((), 16, (SMALL, BIG)),
        PlanRequest(variant="hermes-4-70b", quant="Q4_K_M"),
        (BIG.address,),
        "the largest worker first: 48 GB holds most of 70B Q4_K_M, 16 GB of RAM the rest",
    ),
    HostsRow(
        host((16,), 8, (SMALL, BIG)),
        PlanRequest(variant="hermes-4-70b", quant="Q8_0"),
        (SMALL.address, BIG.address),
        "75 GB needs both workers beside a 16 GB GPU and 8 GB of RAM; registered in the order given",
    ),
]


@pytest.mark.parametrize("row", HOSTS, ids=[r.why for r in HOSTS])
def test_the_fewest_hosts_that_hold_the_model(row: HostsRow) -> None:
    p = plan(row.hw, CATALOG, row.request)
    assert isinstance(p, Plan), p
    assert p.workers == row.workers, row.why
    if row.workers:
        assert_across_hosts(p, row.hw)
        alone = plan(replace(row.hw, workers=()), CATALOG, replace(row.request, ctx=p.context))
        assert isinstance(alone, NoFit), "workers only when this host alone cannot hold it"
    else:
        assert all(d.host is None for d in p.placement)
        assert engine_split(p).workers == ()


def test_local_gpus_come_after_the_workers_and_hold_the_output() -> None:
    hw = host((16,), 8, (SMALL, BIG))
    p = plan(hw, CATALOG, PlanRequest(variant="hermes-4-70b", quant="Q8_0"))
    assert isinstance(p, Plan), p
    labels = [(d.host, d.device) for d in p.placement]
    assert labels == [(SMALL.address, "gpu"), (BIG.address, "gpu"), (None, "gpu"), (None, "cpu")]
    assert p.placement[2].holds_output and p.placement[2].layers > 0
    split = engine_split(p)
    assert split.tensor_split == tuple(float(d.layers + d.holds_output) for d in p.placement[:3])
    # the engine's own numbering of the local GPUs replaces the local part only
    remapped = engine_split(p, local_split=(0.0, split.tensor_split[2]))
    assert remapped.tensor_split == (*split.tensor_split[:2], 0.0, split.tensor_split[2])
    doc = plan_to_json(p)
    assert [e["host"] for e in doc["placement"]] == [SMALL.address, BIG.address, "local", "local"]
    assert doc["workers"] == [SMALL.address, BIG.address]
    assert doc["tensor_split"] == list(split.tensor_split)


def test_without_workers_the_engine_split_is_the_plan() -> None:
    hw = hardware_from_dict(
        {"gpus": [{"name": "NVIDIA RTX 3090", "memory_total_mib": 24576}] * 2, "ram_total_mib": 65536}
    )
    p = plan(hw, CATALOG, PlanRequest())
    assert isinstance(p, Plan)
    split = engine_split(p)
    assert (split.n_gpu_layers, split.tensor_split, split.workers) == (p.n_gpu_layers, p.tensor_split, ())
    assert all(e["host"] == "local" for e in plan_to_json(p)["placement"])


def test_a_worker_too_small_for_one_layer_is_not_used() -> None:
    tiny = Worker("10.8.0.9:50052", (RemoteDevice("CPU", "cpu", 1024, 600),))
    result = plan(host((), 16, (tiny,)), CATALOG, PlanRequest(variant="hermes-4-405b", quant="Q4_K_M"))
    assert isinstance(result, NoFit)
    assert "workers unable to hold a layer" in result.reason


def test_the_network_term_counts_a_boundary_per_worker_and_the_way_back() -> None:
    request = PlanRequest(variant="hermes-4-70b", quant="Q8_0", ctx=8192)
    faster = gpu_worker("10.8.0.6:50052", 80)
    one = plan(host((), 16, (faster,)), CATALOG, request)
    pair = (gpu_worker("10.8.0.7:50052", 48), gpu_worker("10.8.0.8:50052", 48))
    two = plan(host((), 16, pair), CATALOG, request)
    assert isinstance(one, Plan) and isinstance(two, Plan)
    assert (len(one.workers), len(two.workers)) == (1, 2)
    assert any("2 host boundaries" in line for line in one.arithmetic)
    assert any("3 host boundaries" in line for line in two.arithmetic)
