"""`serve` and `plan` on machines whose GPUs the engine cannot use (simulated with --hardware profiles;
the engine is the real CPU-only build installed here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hermesd.cli.plan import plan_command
from hermesd.cli.serve import serve_command
from tests.fixtures.tiny_models import tiny_model

PROFILES = Path(__file__).resolve().parents[1] / "fixtures" / "hardware"
TWO_GPUS = PROFILES / "2x3090-24gb.json"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HERMESD_CATALOG_OVERLAY", str(tmp_path / "overlay.json"))
    monkeypatch.setenv("HERMESD_STATE_DIR", str(tmp_path / "state"))
    for name in ("HERMESD_ALLOW_CPU", "HERMESD_GPU_LAYERS", "HERMESD_HARDWARE", "HERMESD_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def run(command: Any, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(command, list(args), terminal_width=200, env={"COLUMNS": "200", **(env or {})})


def test_serve_refuses_gpus_the_engine_cannot_use() -> None:
    result = run(serve_command, "--hardware", str(TWO_GPUS), "--offline")
    assert result.exit_code == 2
    error = [line for line in result.stderr.splitlines() if line.startswith("hermesd: error:")]
    assert len(error) == 1, result.stderr
    for part in (
        "2 NVIDIA GPU(s)",
        "RTX 3090",
        "backends: CPU",
        "hermesd setup-gpu",
        "--allow-cpu",
        "HERMESD_ALLOW_CPU=1",
    ):
        assert part in error[0], part


@pytest.mark.parametrize("how", [["--allow-cpu"], []])
def test_allow_cpu_gets_past_the_refusal(how: list[str], tmp_path: Path) -> None:
    env = {} if how else {"HERMESD_ALLOW_CPU": "1"}
    result = run(serve_command, "--hardware", str(TWO_GPUS), "--offline", *how, env=env)
    # it plans for the CPU and then stops only because the planned file is not cached offline
    assert "cannot use them" not in result.stderr
    assert "offline" in result.stderr and "Q4_K_M" in result.stderr, result.stderr
    record = json.loads((tmp_path / "state" / "engine.json").read_text())
    assert record["current"]["backends"] == ["CPU"]


def test_gpu_layers_on_a_cpu_only_engine_are_refused() -> None:
    model = str(tiny_model("qwen3"))
    result = run(serve_command, "--model", model, "--gpu-layers", "8")
    assert result.exit_code == 2
    assert "--gpu-layers 8 asks for layers on a GPU" in result.stderr and "setup-gpu" in result.stderr
    # with a machine whose GPUs the engine cannot use, --model is refused like the planned model
    gpus = run(serve_command, "--model", model, "--hardware", str(TWO_GPUS))
    assert gpus.exit_code == 2 and "cannot use them" in gpus.stderr


def profile(tmp_path: Path, engine: dict[str, Any] | None) -> Path:
    data = json.loads(TWO_GPUS.read_text())
    if engine is not None:
        data["engine"] = engine
    path = tmp_path / "box.json"
    path.write_text(json.dumps(data))
    return path


def test_plan_for_a_cpu_only_engine_shows_a_banner_and_plans_for_the_cpu(tmp_path: Path) -> None:
    path = profile(tmp_path, {"backends": ["CPU"]})
    human = run(plan_command, "--hardware", str(path), "--no-verify")
    assert human.exit_code == 0, human.output
    assert "cannot use this machine's 2 GPU(s)" in human.stderr and "hermesd setup-gpu" in human.stderr
    assert "on the CPU" in human.stdout and "n_gpu_layers=0" in human.stdout
    doc = json.loads(run(plan_command, "--hardware", str(path), "--json").stdout)
    assert doc["n_gpu_layers"] == 0 and [d["device"] for d in doc["placement"]] == ["cpu"]
    assert doc["engine"]["blocked"] is True and doc["engine"]["problems"][0]["code"] == "cpu_only_engine"


def test_plan_without_an_engine_section_assumes_the_gpus_usable(tmp_path: Path) -> None:
    doc = json.loads(run(plan_command, "--hardware", str(profile(tmp_path, None)), "--json").stdout)
    assert doc["n_gpu_layers"] > 0 and "engine" not in doc


def test_plan_with_a_cuda_engine_missing_the_architecture(tmp_path: Path) -> None:
    path = profile(tmp_path, {"backends": ["CUDA", "CPU"], "cuda_archs": ["89", "90"]})
    result = run(plan_command, "--hardware", str(path), "--json")
    doc = json.loads(result.stdout)
    assert doc["engine"]["blocked"] and {p["code"] for p in doc["engine"]["problems"]} == {"missing_arch"}
    assert "compute capability 8.6" in result.stderr
    usable = json.loads(
        run(
            plan_command, "--hardware", str(profile(tmp_path, {"backends": ["CUDA", "CPU"]})), "--json"
        ).stdout
    )
    assert usable["engine"]["usable_gpus"] == [0, 1] and usable["n_gpu_layers"] > 0


def test_pull_fetches_what_serve_would_load_for_the_engine(tmp_path: Path) -> None:
    from hermesd.cli.pull import pull_command

    path = profile(tmp_path, {"backends": ["CPU"]})
    result = run(pull_command, "--hardware", str(path), "--offline")
    assert "cannot use this machine's 2 GPU(s)" in result.stderr
    # on the GPUs this profile would run 70B; on its CPU the fastest option, 14B
    assert "plan for profile" in result.stderr and "hermes-4-14b Q4_K_M" in result.stderr
