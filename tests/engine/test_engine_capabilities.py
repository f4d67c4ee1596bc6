"""The engine probe against the llama.cpp installed here (a CPU build), and llama.cpp's load account.

The real probe guards the ctypes signatures of ggml's device API: a wrong structure layout or return
type shows up as a wrong device count, name or memory size."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hermesd.runtime.engine.capabilities import (
    EngineCapabilities,
    EngineDevice,
    capabilities_from_json,
    cuda_archs_from_feature,
    load_record,
    loaded_library,
    normalize_pci_bus_id,
    probe,
    save_record,
    use_pci_bus_order,
)
from hermesd.runtime.engine.load_report import (
    OffloadError,
    buffer_device,
    check_offload,
    parse_load_log,
)


def test_probe_lists_exactly_one_cpu_device_with_the_machines_memory() -> None:
    caps = probe()
    assert caps.backends == ("CPU",) and caps.gpu_offload is False and caps.cuda_archs == ()
    (cpu,) = caps.devices
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert (cpu.name, cpu.kind, cpu.backend, cpu.pci_bus_id) == ("CPU", "cpu", "CPU", None)
    assert cpu.memory_total_bytes == total and cpu.memory_free_bytes == total
    assert cpu.description  # the CPU model name from ggml
    assert caps.gpu_devices == ()
    assert "CPU :" in caps.system_info and caps.llama_cpp_python == "0.3.36"
    assert set(caps.cpu_features) <= set(caps.system_info.replace("|", " ").replace("=", " ").split())
    # the same libggml that libllama loaded, not a second copy
    assert caps.library == loaded_library("libggml") and Path(caps.library).is_file()
    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


def test_capabilities_round_trip_through_json() -> None:
    caps = probe()
    assert capabilities_from_json(caps.to_json()) == caps


def test_pci_bus_order_is_forced() -> None:
    env = {"CUDA_DEVICE_ORDER": "FASTEST_FIRST"}
    use_pci_bus_order(env)
    assert env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("00000000:01:00.0", "0000:01:00.0"),  # NVML
        ("0000:C1:00.0", "0000:c1:00.0"),  # CUDA, upper case
        ("0000:c1:00.0", "0000:c1:00.0"),
        (None, None),
        ("", None),
    ],
)
def test_pci_bus_ids_compare_across_nvml_and_cuda(raw: str | None, expected: str | None) -> None:
    assert normalize_pci_bus_id(raw) == expected


def test_cuda_arch_feature() -> None:
    assert cuda_archs_from_feature("750,800,860,890,1200") == ("75", "80", "86", "89", "120")
    assert cuda_archs_from_feature("") == ()


def gpu_caps() -> EngineCapabilities:
    gpu = EngineDevice("CUDA0", "RTX 3090", "gpu", "CUDA", 1, 2, "0000:01:00.0")
    cpu = EngineDevice("CPU", "cpu", "cpu", "CPU", 1, 2)
    return EngineCapabilities("0.3.36", ("CUDA", "CPU"), (gpu, cpu), True, ("86",))


def test_record_keeps_the_last_gpu_engine(tmp_path: Path) -> None:
    assert load_record(tmp_path).current is None
    save_record(tmp_path, gpu_caps())
    save_record(tmp_path, probe())  # a later `pip install -U` brought a CPU build back
    record = load_record(tmp_path)
    assert record.current is not None and record.current.backends == ("CPU",)
    assert record.last_gpu == gpu_caps() and record.last_gpu_at
    assert save_record(tmp_path / "file" / "below", gpu_caps()) is not None
    (tmp_path / "blocked").write_text("")
    assert save_record(tmp_path / "blocked", gpu_caps()) is None  # not a directory: not written


# -- llama.cpp's account of a load

CUDA_LOAD = """\
load_tensors: layer   0 assigned to device CPU, is_swa = 0
load_tensors: layer   1 assigned to device CUDA0, is_swa = 0
load_tensors: layer   2 assigned to device CUDA0, is_swa = 0
load_tensors: layer   3 assigned to device CUDA1, is_swa = 0
load_tensors: offloading output layer to GPU
load_tensors: offloading 3 repeating layers to GPU
load_tensors: offloaded 4/5 layers to GPU
load_tensors:    CPU_Mapped model buffer size =    10.50 MiB
load_tensors:        CUDA0 model buffer size =   200.00 MiB
load_tensors:        CUDA1 model buffer size =   100.00 MiB
llama_kv_cache:      CUDA0 KV buffer size =    16.00 MiB
llama_kv_cache:      CUDA1 KV buffer size =     8.00 MiB
sched_reserve:      CUDA0 compute buffer size =    30.00 MiB
sched_reserve:  CUDA_Host compute buffer size =     4.00 MiB
""".splitlines()
NAMES = ["CUDA0", "CUDA1", "CPU"]


def test_load_log_gives_layers_and_memory_per_device() -> None:
    report = parse_load_log(CUDA_LOAD, NAMES)
    assert report.layers == {"CPU": 1, "CUDA0": 2, "CUDA1": 1}
    assert report.output_offloaded and report.offloaded == (4, 5)
    mib = 1024 * 1024
    assert report.memory["CUDA0"] == {"model": 200 * mib, "KV": 16 * mib, "compute": 30 * mib}
    assert report.memory["CPU"] == {"model": round(10.5 * mib), "compute": 4 * mib}  # CUDA_Host is RAM
    assert report.gpu_layers() == 3
    assert check_offload(report, requested_gpu_layers=-1, gpu_names=["CUDA0", "CUDA1"]) == [
        "llama.cpp placed 3 of the 4 layers planned for the GPUs there"
    ]
    assert check_offload(report, requested_gpu_layers=3, gpu_names=["CUDA0", "CUDA1"]) == []


@pytest.mark.parametrize(
    "buffer,device",
    [("CUDA0", "CUDA0"), ("CUDA0_Split", "CUDA0"), ("CUDA_Host", "CPU"), ("CPU_REPACK", "CPU")],
)
def test_buffers_belong_to_devices(buffer: str, device: str) -> None:
    assert buffer_device(buffer, NAMES) == device


def test_gpu_layers_that_land_on_the_cpu_are_an_error() -> None:
    cpu_only = parse_load_log(
        [line.replace("CUDA0", "CPU").replace("CUDA1", "CPU") for line in CUDA_LOAD], NAMES
    )
    with pytest.raises(OffloadError, match="placed all 4 layers on the CPU"):
        check_offload(cpu_only, requested_gpu_layers=-1, gpu_names=["CUDA0"])
    # a CPU-only engine, or a plan without GPU layers, expects nothing on a GPU
    assert check_offload(cpu_only, requested_gpu_layers=-1, gpu_names=[]) == []
    assert check_offload(cpu_only, requested_gpu_layers=0, gpu_names=["CUDA0"]) == []


def test_a_real_load_reports_its_layers_on_the_cpu() -> None:
    """The tiny model through the real engine: llama.cpp's debug lines reach the report."""
    from hermesd.runtime.engine.llama_model import LlamaModel, LlamaModelConfig, capture_log
    from tests.fixtures.tiny_models import tiny_model

    with capture_log() as lines:
        model = LlamaModel(LlamaModelConfig(tiny_model("qwen3")))
    try:
        report = parse_load_log(lines, ["CPU"])
        # llama.cpp counts the output layer as one more (n_gpu_layers = n_layer + 1 offloads all)
        assert report.layers == {"CPU": int(model.metadata["qwen3.block_count"]) + 1}
        assert report.memory["CPU"]["model"] > 0
        assert report.devices()[0].kind == "cpu"
    finally:
        model.close()
