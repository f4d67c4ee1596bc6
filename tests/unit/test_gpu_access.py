"""Which GPUs the engine can use: simulated engine capabilities against simulated NVML machines."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from hermesd.models.catalog import load_catalog
from hermesd.runtime.engine.capabilities import EngineCapabilities, EngineDevice
from hermesd.runtime.gpu_access import arch_fit, gpu_access, simulated_engine
from hermesd.runtime.hardware import Gpu, Hardware, load_profile
from hermesd.runtime.planner import Plan, PlanRequest, plan

PROFILES = Path(__file__).resolve().parents[1] / "fixtures" / "hardware"
GIB = 1024**3
CPU = EngineDevice("CPU", "AMD EPYC", "cpu", "CPU", 64 * GIB, 64 * GIB)


def engine(
    *gpus: EngineDevice, backends: tuple[str, ...] = ("CPU",), archs: tuple[str, ...] = ()
) -> EngineCapabilities:
    return EngineCapabilities("0.3.36", backends, (CPU, *gpus), gpu_offload=bool(gpus), cuda_archs=archs)


def cuda(k: int, name: str, bus: str | None, gib: int = 24) -> EngineDevice:
    return EngineDevice(f"CUDA{k}", name, "gpu", "CUDA", gib * GIB, gib * GIB, bus)


def machine(*gpus: tuple[str, str, str | None, int]) -> Hardware:
    return Hardware(
        gpus=tuple(
            Gpu(i, name, gib * 1024, gib * 1024 - 512, compute_capability=cc, pci_bus_id=bus)
            for i, (name, cc, bus, gib) in enumerate(gpus)
        ),
        ram_total_mib=65536,
        ram_available_mib=60000,
        cpu_cores=16,
    )


TWO_3090 = machine(("RTX 3090", "8.6", "00000000:01:00.0", 24), ("RTX 3090", "8.6", "00000000:02:00.0", 24))
MIXED = machine(("RTX 4090", "8.9", "00000000:01:00.0", 24), ("RTX 3060", "8.6", "00000000:41:00.0", 12))


def make_plan(hw: Hardware) -> Plan:
    result = plan(hw, load_catalog(), PlanRequest(parallel=1))
    assert isinstance(result, Plan)
    return result


def test_cpu_only_engine_refuses_with_one_message_naming_gpus_backends_and_both_ways_out() -> None:
    access = gpu_access(TWO_3090, engine())
    assert access.blocked and [p.code for p in access.problems] == ["cpu_only_engine"]
    text = access.refusal()
    for part in (
        "2 NVIDIA GPU(s)",
        "GPU 0 RTX 3090",
        "GPU 1 RTX 3090",
        "backends: CPU",
        "hermesd setup-gpu",
        "--allow-cpu",
        "HERMESD_ALLOW_CPU=1",
        "llama-cpp-python 0.3.36",
    ):
        assert part in text, part
    assert "setup-gpu" in access.banner() and "plan is for the CPU" in access.banner()


def test_allow_cpu_replans_for_the_cpu() -> None:
    access = gpu_access(TWO_3090, engine())
    on_gpus = make_plan(TWO_3090)
    on_cpu = make_plan(access.planning_hardware())
    assert on_gpus.n_gpu_layers > 0
    assert on_cpu.n_gpu_layers == 0 and [d.device for d in on_cpu.placement] == ["cpu"]
    assert access.tensor_split(on_cpu.tensor_split) == ()


def test_cuda_backend_with_zero_devices_has_its_own_message() -> None:
    hw = replace(TWO_3090, cuda_version="12.2")
    access = gpu_access(hw, engine(backends=("CUDA", "CPU"), archs=("86",)))
    (problem,) = access.problems
    assert access.blocked and problem.code == "no_cuda_devices"
    assert "CUDA backend sees no device" in problem.message and "CUDA 12.2" in problem.message
    assert "driver" in problem.fix


@pytest.mark.parametrize(
    "cc,archs,fit",
    [
        ("8.6", ("86",), "native"),
        ("8.9", ("86",), "native"),  # sm_86 code runs on 8.9 (same major, lower minor)
        ("8.6", ("89",), "missing"),  # code for 8.9 never runs on 8.6
        ("9.0", ("80", "86"), "ptx"),
        ("7.5", ("86", "89"), "missing"),
        ("8.6", ("120",), "missing"),
        ("12.0", ("120a",), "native"),
        (None, ("86",), "unknown"),
        ("8.6", (), "unknown"),
    ],
)
def test_arch_fit(cc: str | None, archs: tuple[str, ...], fit: str) -> None:
    assert arch_fit(cc, archs) == fit


def test_missing_architectures_leave_that_gpu_out() -> None:
    hw = machine(("Tesla T4", "7.5", "00000000:01:00.0", 16), ("RTX 3090", "8.6", "00000000:02:00.0", 24))
    eng = engine(
        cuda(0, "Tesla T4", "0000:01:00.0", 16), cuda(1, "RTX 3090", "0000:02:00.0"), archs=("86", "89")
    )
    access = gpu_access(hw, eng)
    (problem,) = access.problems
    assert problem.code == "missing_arch" and "compute capability 7.5" in problem.message
    assert "86, 89" in problem.message and "builds for 75" in problem.fix
    assert not access.blocked and [m.gpu.name for m in access.usable] == ["RTX 3090"]
    # llama.cpp still sees the T4: an explicit split keeps every layer off it
    assert access.tensor_split() == (0.0, 1.0)
    only = make_plan(access.planning_hardware())
    assert [d.name for d in only.placement if d.device == "gpu"] == ["RTX 3090"]


def test_every_gpu_missing_its_architecture_blocks() -> None:
    eng = engine(cuda(0, "RTX 3090", "0000:01:00.0"), cuda(1, "RTX 3090", "0000:02:00.0"), archs=("120",))
    access = gpu_access(TWO_3090, eng)
    assert access.blocked and {p.code for p in access.problems} == {"missing_arch"}
    assert "compute capability 8.6" in access.refusal()


def test_cuda_numbering_the_gpus_otherwise_than_nvml_is_mapped_by_pci_bus_id() -> None:
    # CUDA's default order is fastest first; here it lists the 3060 (bus 41) first, NVML the 4090 (bus 01)
    eng = engine(
        cuda(0, "RTX 3060", "0000:41:00.0", 12), cuda(1, "RTX 4090", "0000:01:00.0"), archs=("86", "89")
    )
    access = gpu_access(MIXED, eng)
    assert [(m.gpu.name, m.device.name) for m in access.usable] == [
        ("RTX 3060", "CUDA0"),
        ("RTX 4090", "CUDA1"),
    ]
    assert [p.code for p in access.problems] == ["order"]
    assert "CUDA0 = NVML GPU 1" in access.problems[0].message
    p = make_plan(access.planning_hardware())
    split = access.tensor_split(p.tensor_split)
    # the planner's shares follow the engine's numbering: the 4090 (CUDA1) takes the larger one
    assert len(split) == 2 and split[1] > split[0] > 0
    same_order = engine(
        cuda(0, "RTX 4090", "0000:01:00.0"), cuda(1, "RTX 3060", "0000:41:00.0", 12), archs=("86", "89")
    )
    straight = gpu_access(MIXED, same_order)
    assert straight.problems == () and straight.planning_hardware() is MIXED
    assert straight.tensor_split(make_plan(MIXED).tensor_split) == make_plan(MIXED).tensor_split


def test_a_gpu_the_engine_does_not_see_is_left_out() -> None:
    eng = engine(cuda(0, "RTX 3090", "0000:02:00.0"), archs=("86",))  # CUDA_VISIBLE_DEVICES=1
    access = gpu_access(TWO_3090, eng)
    assert [p.code for p in access.problems] == ["not_seen"] and "PCI 00000000:01:00.0" in access.problems[
        0
    ].message
    assert [m.gpu.index for m in access.usable] == [1] and access.tensor_split() == ()


def test_without_pci_bus_ids_gpus_match_by_position() -> None:
    hw = load_profile(PROFILES / "2x3090-24gb.json")
    eng = engine(cuda(0, "RTX 3090", None), cuda(1, "RTX 3090", None), archs=("86",))
    access = gpu_access(hw, eng)
    assert len(access.usable) == 2 and [p.code for p in access.problems] == ["by_position"]


def test_a_cpu_only_machine_needs_nothing() -> None:
    access = gpu_access(load_profile(PROFILES / "cpu-32gb.json"), engine())
    assert not access.blocked and access.problems == () and access.tensor_split() == ()


def test_profile_engine_section_simulates_the_engine(tmp_path: Path) -> None:
    hw = load_profile(PROFILES / "2x3090-24gb.json")
    assert simulated_engine(hw) is None  # no section: plan --hardware assumes the GPUs usable
    cpu_only = replace(hw, engine=replace_engine(("CPU",), False))
    assert gpu_access(cpu_only, simulated_engine(cpu_only) or engine()).blocked
    with_cuda = replace(hw, engine=replace_engine(("CUDA", "CPU"), True, ("86",)))
    sim = simulated_engine(with_cuda)
    assert sim is not None and [d.name for d in sim.gpu_devices] == ["CUDA0", "CUDA1"]
    assert len(gpu_access(with_cuda, sim).usable) == 2


def replace_engine(backends: tuple[str, ...], offload: bool, archs: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    from hermesd.runtime.hardware import EngineSpec

    return EngineSpec(backends, offload, archs)


def test_profile_engine_section_and_pci_bus_ids_round_trip(tmp_path: Path) -> None:
    from hermesd.runtime.hardware import EngineSpec, hardware_from_dict, to_profile_json

    data = {
        "gpus": [{"name": "RTX 3090", "memory_total_mib": 24576, "pci_bus_id": "00000000:01:00.0"}],
        "ram_total_mib": 65536,
        "engine": {"backends": ["CUDA", "CPU"], "cuda_archs": ["86", 8.9]},
    }
    hw = hardware_from_dict(data)
    assert hw.gpus[0].pci_bus_id == "00000000:01:00.0"
    assert hw.engine == EngineSpec(("CUDA", "CPU"), True, ("86", "89"))  # gpu_offload follows the backends
    again = hardware_from_dict(to_profile_json(hw))
    assert again.engine == hw.engine and again.gpus == hw.gpus
    assert hardware_from_dict({**data, "engine": {"backends": ["CPU"]}}).engine == EngineSpec(("CPU",), False)


@pytest.mark.parametrize(
    "engine,message",
    [
        ("CPU", "expected an object"),
        ({"backends": "CPU"}, "engine.backends: expected a list"),
        ({"backends": ["CUDA"], "gpu_offload": "yes"}, "engine.gpu_offload: expected true or false"),
    ],
)
def test_bad_engine_sections_are_named(engine: object, message: str) -> None:
    from hermesd.runtime.hardware import HardwareProfileError, hardware_from_dict

    with pytest.raises(HardwareProfileError, match=message):
        hardware_from_dict({"gpus": [], "ram_total_mib": 1024, "engine": engine})


def test_discovery_reads_the_pci_bus_id_from_nvml() -> None:
    from types import SimpleNamespace

    from hermesd.runtime.hardware import discover

    class Nvml:
        NVML_CLOCK_MEM = 2

        def nvmlInit(self) -> None: ...
        def nvmlShutdown(self) -> None: ...
        def nvmlSystemGetDriverVersion(self) -> str:
            return "580.1"

        def nvmlSystemGetCudaDriverVersion(self) -> int:
            return 13000

        def nvmlDeviceGetCount(self) -> int:
            return 1

        def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
            return i

        def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
            return SimpleNamespace(total=24 * GIB, free=23 * GIB)

        def nvmlDeviceGetName(self, h: int) -> bytes:
            return b"NVIDIA GeForce RTX 3090"

        def nvmlDeviceGetCudaComputeCapability(self, h: int) -> tuple[int, int]:
            return (8, 6)

        def nvmlDeviceGetPciInfo(self, h: int) -> SimpleNamespace:
            return SimpleNamespace(busId=b"00000000:41:00.0")

    memory = SimpleNamespace(total=64 * GIB, available=60 * GIB)
    ps = SimpleNamespace(virtual_memory=lambda: memory, cpu_count=lambda logical=True: 16)
    hw = discover(nvml=Nvml(), psutil_module=ps)
    assert hw.gpus[0].pci_bus_id == "00000000:41:00.0" and hw.cuda_version == "13.0"
