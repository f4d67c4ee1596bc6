"""Worker profiles (`hermesd plan --worker-profile FILE`): a --hardware profile of another host with
its llama.cpp RPC `"address"`, read into the `Worker` the planner and the RPC runtime share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hermesd.runtime.hardware import (
    HardwareProfileError,
    RemoteDevice,
    Worker,
    load_profile,
    to_profile_json,
    worker_from_profile,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "workers"
CPU_128 = {"gpus": [], "ram_total_mib": 131072, "cpu_cores": 16}
TWO_GPUS = {
    "gpus": [
        {"name": "NVIDIA GeForce RTX 3090", "memory_total_mib": 24576, "memory_free_mib": 24000},
        {"name": "NVIDIA RTX A6000", "memory_total_mib": 49140, "memory_bandwidth_gbps": 700},
    ],
    "ram_total_mib": 65536,
}


def write(tmp_path: Path, data: Any, name: str = "w.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


GOOD = [
    # (profile, devices, why)
    (
        {**CPU_128, "address": "10.8.0.2:50052"},
        (RemoteDevice("CPU", "cpu", 131072, 117964),),
        "no GPU: one CPU device with 90 % of the RAM, as a --hardware profile's default",
    ),
    (
        {**CPU_128, "ram_available_mib": 100000, "memory_limit_mib": 65536, "address": "w1.lan:50052"},
        (RemoteDevice("CPU", "cpu", 65536, 65536),),
        "memory_limit_mib caps the CPU device like the worker's --memory-limit",
    ),
    (
        {**CPU_128, "ram_available_mib": 30000, "memory_limit_mib": 65536, "address": "w1.lan:50052"},
        (RemoteDevice("CPU", "cpu", 65536, 30000),),
        "a limit above what is available leaves the available RAM",
    ),
    (
        {**TWO_GPUS, "address": "10.8.0.5:50052"},
        (
            RemoteDevice("NVIDIA GeForce RTX 3090", "gpu", 24576, 24000),
            RemoteDevice("NVIDIA RTX A6000", "gpu", 49140, 49140 - 512, memory_bandwidth_gbps=700.0),
        ),
        "each GPU is a device with its free memory (the profile default when absent), in order",
    ),
]


@pytest.mark.parametrize(("profile", "devices", "why"), GOOD)
def test_worker_profile_becomes_devices(
    tmp_path: Path, profile: dict[str, Any], devices: tuple[RemoteDevice, ...], why: str
) -> None:
    worker = worker_from_profile(write(tmp_path, profile))
    assert worker == Worker(address=profile["address"], devices=devices), why


BAD = [
    # (file content, words the message must hold)
    ({**CPU_128}, "address: missing"),
    ({**CPU_128, "address": 50052}, "address: expected a string"),
    ({**CPU_128, "address": "10.8.0.2"}, 'expected "HOST:PORT"'),
    ({**CPU_128, "address": ":50052"}, 'expected "HOST:PORT"'),
    ({**CPU_128, "address": "10.8.0.2:0"}, "port must be a number from 1 to 65535"),
    ({**CPU_128, "address": "10.8.0.2:65536"}, "port must be a number from 1 to 65535"),
    ({**CPU_128, "address": "10.8.0.2:rpc"}, "port must be a number"),
    ({**CPU_128, "address": "fd00::2:50052"}, "IPv4 addresses or host names only"),
    ({**CPU_128, "address": "[fd00::2]:50052"}, "IPv4 addresses or host names only"),
    ({**CPU_128, "address": "w:50052", "memory_limit_mib": -1}, "memory_limit_mib: expected a non-negative"),
    ({"address": "10.8.0.2:50052", "gpus": []}, "ram_total_mib: missing"),
    ({"address": "10.8.0.2:5", "gpus": [{"name": "x"}], "ram_total_mib": 1024}, "gpus[0].memory_total_mib"),
    ("[1, 2]", "expected a JSON object"),
    ("{not json", "not valid JSON"),
]


@pytest.mark.parametrize(("content", "words"), BAD)
def test_bad_worker_profiles_name_the_file_and_key(tmp_path: Path, content: Any, words: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(HardwareProfileError) as err:
        worker_from_profile(path)
    assert str(err.value).startswith(str(path)), err.value
    assert words in str(err.value)


def test_a_missing_worker_profile_is_named(tmp_path: Path) -> None:
    with pytest.raises(HardwareProfileError, match=r"absent\.json: cannot read the worker profile"):
        worker_from_profile(tmp_path / "absent.json")


def test_the_done_when_fixtures_are_three_128_gb_hosts() -> None:
    box = load_profile(FIXTURES / "box-128gb.json")
    workers = [worker_from_profile(FIXTURES / f"w{i}-128gb.json") for i in (1, 2)]
    assert box.ram_total_mib == 131072 and not box.gpus and not box.workers
    assert [w.address for w in workers] == ["10.8.0.2:50052", "10.8.0.3:50052"]
    assert all(w.devices == (RemoteDevice("CPU", "cpu", 131072, 117964),) for w in workers)


def test_profile_json_lists_the_workers(tmp_path: Path) -> None:
    from dataclasses import replace

    worker = worker_from_profile(write(tmp_path, {**TWO_GPUS, "address": "10.8.0.9:50052"}))
    hw = replace(load_profile(FIXTURES / "box-128gb.json"), workers=(worker,))
    doc = to_profile_json(hw)
    (entry,) = doc["workers"]
    assert entry["address"] == "10.8.0.9:50052"
    keys = ("name", "kind", "memory_total_mib", "memory_free_mib")
    assert [tuple(d[k] for k in keys) for d in entry["devices"]] == [
        ("NVIDIA GeForce RTX 3090", "gpu", 24576, 24000),
        ("NVIDIA RTX A6000", "gpu", 49140, 48628),
    ]
    assert "workers" not in to_profile_json(load_profile(FIXTURES / "box-128gb.json"))
