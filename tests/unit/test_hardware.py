"""Hardware discovery with fake NVML/psutil, and --hardware profiles."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hermesd.runtime.hardware import (
    DRIVER_RESERVE_MIB,
    Hardware,
    HardwareProfileError,
    discover,
    extra_buffers_by_default,
    hardware_from_dict,
    load_profile,
    read_cpu_features,
    to_profile_json,
)

MIB = 1024 * 1024


class FakeNvml:
    """The part of pynvml's API that discovery uses, over a list of GPU descriptions."""

    NVML_CLOCK_MEM = 2

    class NVMLError(Exception):
        pass

    def __init__(
        self, gpus: list[dict[str, Any]], *, fail_init: bool = False, as_bytes: bool = False
    ) -> None:
        self.gpus = gpus
        self.fail_init = fail_init
        self.as_bytes = as_bytes
        self.shutdown_called = False

    def _s(self, text: str) -> str | bytes:
        return text.encode() if self.as_bytes else text

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.shutdown_called = True

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        return self._s("550.54.15")

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> dict[str, Any]:
        return self.gpus[i]

    def nvmlDeviceGetName(self, h: dict[str, Any]) -> str | bytes:
        return self._s(h["name"])

    def nvmlDeviceGetUUID(self, h: dict[str, Any]) -> str | bytes:
        return self._s(h.get("uuid", "GPU-0"))

    def nvmlDeviceGetMemoryInfo(self, h: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(total=h["total_mib"] * MIB, free=h["free_mib"] * MIB, used=0)

    def nvmlDeviceGetCudaComputeCapability(self, h: dict[str, Any]) -> tuple[int, int]:
        return h["cc"]

    def nvmlDeviceGetMaxClockInfo(self, h: dict[str, Any], kind: int) -> int:
        assert kind == self.NVML_CLOCK_MEM
        if "mem_clock" not in h:
            raise self.NVMLError("Not Supported")
        return int(h["mem_clock"])

    def nvmlDeviceGetMemoryBusWidth(self, h: dict[str, Any]) -> int:
        return int(h.get("bus", 0))


class FakePsutil:
    def __init__(self, total_mib: int, available_mib: int, cores: int | None, threads: int) -> None:
        self.total, self.available, self.cores, self.threads = total_mib, available_mib, cores, threads

    def virtual_memory(self) -> SimpleNamespace:
        return SimpleNamespace(total=self.total * MIB, available=self.available * MIB)

    def cpu_count(self, logical: bool = True) -> int | None:
        return self.threads if logical else self.cores


CPUINFO_X86 = "processor\t: 0\nflags\t\t: fpu sse avx avx2 fma f16c avx512f amx_tile amx_int8 hypervisor\n"
CPUINFO_ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes sve i8mm bf16\n"


def test_discover_two_gpus(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO_X86)
    nvml = FakeNvml(
        [
            # RTX 3090: 9751 MHz x 384 bit x 2 / 8 = 936 GB/s
            {
                "name": "NVIDIA GeForce RTX 3090",
                "total_mib": 24576,
                "free_mib": 24000,
                "cc": (8, 6),
                "mem_clock": 9751,
                "bus": 384,
            },
            {"name": "NVIDIA GeForce RTX 3060", "total_mib": 12288, "free_mib": 11000, "cc": (8, 6)},
        ],
        as_bytes=True,
    )
    hw = discover(nvml=nvml, psutil_module=FakePsutil(65536, 60000, 8, 16), cpuinfo=cpuinfo)
    assert [g.name for g in hw.gpus] == ["NVIDIA GeForce RTX 3090", "NVIDIA GeForce RTX 3060"]
    assert [(g.memory_total_mib, g.memory_free_mib) for g in hw.gpus] == [(24576, 24000), (12288, 11000)]
    assert hw.gpus[0].compute_capability == "8.6"
    assert hw.gpus[0].memory_bandwidth_gbps == pytest.approx(936.0, abs=1)
    # No clock from NVML: the data-sheet table by name.
    assert hw.gpus[1].memory_bandwidth_gbps is None and hw.gpus[1].bandwidth_gbps() == 360.0
    assert (hw.driver_version, hw.cuda_version) == ("550.54.15", "12.4")
    assert (hw.ram_total_mib, hw.ram_available_mib, hw.cpu_cores, hw.cpu_threads) == (65536, 60000, 8, 16)
    assert hw.cpu_features == ("avx", "avx2", "fma", "f16c", "avx512f", "amx_tile", "amx_int8")
    assert hw.source == "discovered" and nvml.shutdown_called


@pytest.mark.parametrize(
    "nvml,note",
    [
        (FakeNvml([], fail_init=True), "no NVIDIA driver"),
        (FakeNvml([]), None),  # driver present, zero GPUs
    ],
)
def test_no_gpu_is_a_cpu_only_machine(nvml: FakeNvml, note: str | None, tmp_path: Path) -> None:
    hw = discover(nvml=nvml, psutil_module=FakePsutil(8192, 6000, None, 4), cpuinfo=tmp_path / "missing")
    assert hw.gpus == ()
    assert hw.cpu_cores == 4  # no physical count: logical
    assert hw.cpu_features == ()
    if note:
        assert any(note in n for n in hw.notes)


def test_missing_nvml_bindings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    hw = discover(psutil_module=FakePsutil(8192, 6000, 4, 8), cpuinfo=tmp_path / "missing")
    assert hw.gpus == () and any("nvidia-ml-py" in n for n in hw.notes)


def test_nvml_failure_mid_listing_is_cpu_only(tmp_path: Path) -> None:
    nvml = FakeNvml([{"name": "X", "total_mib": 1, "free_mib": 1, "cc": (8, 0)}])
    nvml.nvmlDeviceGetMemoryInfo = lambda h: (_ for _ in ()).throw(FakeNvml.NVMLError("GPU is lost"))  # type: ignore[method-assign]
    hw = discover(nvml=nvml, psutil_module=FakePsutil(8192, 6000, 4, 8), cpuinfo=tmp_path / "x")
    assert hw.gpus == () and any("GPU is lost" in n for n in hw.notes)


def test_real_discovery_runs_here() -> None:
    """On this machine (no GPU, maybe no driver) discovery must not fail."""
    hw = discover()
    assert hw.ram_total_mib > 0 and hw.cpu_cores >= 1


@pytest.mark.parametrize("text,flags", [(CPUINFO_X86, ("avx", "avx2")), (CPUINFO_ARM, ("asimd", "sve"))])
def test_cpu_features(tmp_path: Path, text: str, flags: tuple[str, ...]) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    assert set(flags) <= set(read_cpu_features(path))


def test_profile_defaults(tmp_path: Path) -> None:
    path = tmp_path / "box.json"
    path.write_text(
        json.dumps({"gpus": [{"name": "RTX 3060", "memory_total_mib": 12288}], "ram_total_mib": 32768})
    )
    hw = load_profile(path)
    # shared/reference/hardware-profile.md: free = total minus a typical driver reserve; RAM 90 %.
    assert hw.gpus[0].memory_free_mib == 12288 - DRIVER_RESERVE_MIB
    assert hw.ram_available_mib == int(32768 * 0.9)
    assert hw.source == f"profile {path}"


def test_contract_example_loads() -> None:
    example = {
        "gpus": [
            {
                "name": "NVIDIA GeForce RTX 3060",
                "memory_total_mib": 12288,
                "memory_free_mib": 11900,
                "compute_capability": "8.6",
            }
        ],
        "ram_total_mib": 32768,
        "ram_available_mib": 30000,
        "cpu_cores": 8,
    }
    hw = hardware_from_dict(example)
    gpu = {**example["gpus"][0], "index": 0}  # type: ignore[index]
    assert to_profile_json(hw) == {**example, "gpus": [gpu]}


def test_profile_round_trip() -> None:
    hw = Hardware(
        gpus=(),
        ram_total_mib=1000,
        ram_available_mib=900,
        cpu_cores=2,
        cpu_threads=4,
        cpu_features=("avx2",),
        ram_bandwidth_gbps=80.0,
        driver_version="1",
        cuda_version="12.4",
    )
    back = hardware_from_dict(json.loads(json.dumps(to_profile_json(hw))))
    assert replace(back, source="discovered") == hw


@pytest.mark.parametrize(
    "doc,message",
    [
        ("[1]", "expected a JSON object"),
        ('{"gpus": {}, "ram_total_mib": 1}', "gpus: expected a list"),
        ('{"gpus": []}', "ram_total_mib: missing"),
        ('{"gpus": [{"name": "x"}], "ram_total_mib": 1}', r"gpus\[0\]\.memory_total_mib: missing"),
        (
            '{"gpus": [{"memory_total_mib": "lots"}], "ram_total_mib": 1}',
            r"gpus\[0\]\.memory_total_mib: expected",
        ),
        (
            '{"gpus": [{"memory_total_mib": 10, "memory_free_mib": 20}], "ram_total_mib": 1}',
            "exceeds memory_total",
        ),
        ('{"gpus": [], "ram_total_mib": 10, "ram_available_mib": 20}', "exceeds ram_total_mib"),
        ('{"gpus": [], "ram_total_mib": -5}', "non-negative"),
        (
            '{"gpus": [], "ram_total_mib": 5, "ram_bandwidth_gbps": 0}',
            "ram_bandwidth_gbps: expected a positive",
        ),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_profiles_name_file_and_field(tmp_path: Path, doc: str, message: str) -> None:
    path = tmp_path / "box.json"
    path.write_text(doc)
    with pytest.raises(HardwareProfileError, match=message) as info:
        load_profile(path)
    assert str(path) in str(info.value)


def test_missing_profile_file(tmp_path: Path) -> None:
    with pytest.raises(HardwareProfileError, match="cannot read the hardware profile"):
        load_profile(tmp_path / "nope.json")


@pytest.mark.parametrize(
    ("features", "on"),
    [
        (("avx2", "avx512f"), True),  # repacking for the AVX kernels, as llama-server has it
        ((), True),
        (("avx512f", "amx_tile", "amx_int8"), False),  # AMX traps (SIGILL) inside many VMs
        (("amx_bf16",), False),
    ],
)
def test_extra_buffers_are_on_by_default_unless_the_cpu_reports_amx(
    features: tuple[str, ...], on: bool
) -> None:
    assert extra_buffers_by_default(features) is on
