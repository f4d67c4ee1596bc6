"""`hermesd doctor` with the real (CPU-only) engine of this machine, on this machine and on a simulated
2-GPU machine (--hardware), and after a GPU build was replaced by a CPU one."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hermesd.cli.doctor import doctor_command
from hermesd.runtime.engine.capabilities import EngineCapabilities, EngineDevice, save_record

PROFILES = Path(__file__).resolve().parents[1] / "fixtures" / "hardware"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HERMESD_CATALOG_OVERLAY", str(tmp_path / "overlay.json"))
    monkeypatch.setenv("HERMESD_STATE_DIR", str(tmp_path / "state"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HERMESD_PORT", str(s.getsockname()[1]))
    for name in ("HERMESD_HARDWARE", "HERMESD_CONFIG", "HERMESD_CPU_EXTRA_BUFFERS"):
        monkeypatch.delenv(name, raising=False)


def doctor(*args: str) -> Result:
    return CliRunner().invoke(doctor_command, list(args), terminal_width=200)


def test_this_machine_is_ready(tmp_path: Path) -> None:
    result = doctor()
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.stdout and result.stdout.strip().endswith("ready to serve")
    for name in ("python:", "llama.cpp build: llama-cpp-python 0.3.36, backends CPU", "engine devices: CPU",
                 "state dir:", "models: none", "port:"):  # fmt: skip
        assert name in result.stdout, name
    record = json.loads((tmp_path / "state" / "engine.json").read_text())
    assert record["current"]["backends"] == ["CPU"] and record["last_gpu"] is None


def test_a_simulated_two_gpu_machine_shows_the_mismatch() -> None:
    result = doctor("--hardware", str(PROFILES / "2x3090-24gb.json"))
    assert result.exit_code == 1
    fail = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert fail[0].startswith(
        "FAIL GPU access: cpu_only_engine: NVML sees 2 GPU(s) (NVIDIA GeForce RTX 3090)"
    )
    assert "fix: hermesd setup-gpu" in result.stdout
    doc = json.loads(doctor("--hardware", str(PROFILES / "2x3090-24gb.json"), "--json").stdout)
    assert doc["ok"] is False and doc["engine"]["backends"] == ["CPU"]
    failed = [c for c in doc["checks"] if c["status"] == "FAIL"]
    assert [c["name"] for c in failed] == ["GPU access: cpu_only_engine"] and "setup-gpu" in failed[0]["fix"]


def test_a_cpu_build_that_replaced_a_gpu_build_is_reported(tmp_path: Path) -> None:
    gpu = EngineDevice("CUDA0", "RTX 3090", "gpu", "CUDA", 1, 2, "0000:01:00.0")
    save_record(tmp_path / "state", EngineCapabilities("0.3.36", ("CUDA", "CPU"), (gpu,), True, ("86",)))
    result = doctor()
    assert result.exit_code == 1
    assert "FAIL engine record: this environment had a CUDA build of llama-cpp-python 0.3.36" in result.stdout
    assert "now has a CPU-only one" in result.stdout and "reinstalls the kept CUDA wheel" in result.stdout
