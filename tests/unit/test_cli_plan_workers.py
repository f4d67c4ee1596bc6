"""`hermesd plan --worker-profile FILE` and `--worker HOST:PORT`: the plan across hosts, through
click's CliRunner. No network: live workers are asked through a stand-in `query_worker`."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hermesd.cli.plan import plan_command
from hermesd.models.catalog import load_catalog
from hermesd.runtime.hardware import RemoteDevice, Worker, load_profile, worker_from_profile
from hermesd.runtime.planner import PlanRequest, plan, plan_to_json

WORKERS = Path(__file__).resolve().parents[1] / "fixtures" / "workers"
BOX, W1, W2 = (str(WORKERS / f"{name}.json") for name in ("box-128gb", "w1-128gb", "w2-128gb"))
THREE_HOSTS = (
    "--hardware", BOX, "--worker-profile", W1, "--worker-profile", W2, "--variant", "hermes-4-405b"
)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real HF cache and no catalog overlay from the user's home."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("HERMESD_CATALOG_OVERLAY", str(tmp_path / "overlay.json"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


def run(*args: str) -> Result:
    return CliRunner().invoke(plan_command, list(args), terminal_width=200, env={"COLUMNS": "200"})


def test_405b_across_three_128_gb_hosts_json() -> None:
    alone = run("--hardware", BOX, "--variant", "hermes-4-405b", "--json")
    assert alone.exit_code == 1 and json.loads(alone.stdout)["fits"] is False
    result = run(*THREE_HOSTS, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    workers = (worker_from_profile(Path(W1)), worker_from_profile(Path(W2)))
    hw = replace(load_profile(Path(BOX)), workers=workers)
    expected = plan(hw, load_catalog(), PlanRequest(variant="hermes-4-405b"))
    assert doc == json.loads(json.dumps(plan_to_json(expected)))
    assert (doc["variant"], doc["quant"]) == ("hermes-4-405b", "Q4_K_M")
    assert [e["host"] for e in doc["placement"]] == ["10.8.0.2:50052", "10.8.0.3:50052", "local"]
    assert doc["workers"] == ["10.8.0.2:50052", "10.8.0.3:50052"]
    assert sum(e["layers"] for e in doc["placement"]) == doc["layers_total"] == 126


def test_the_rendered_plan_shows_the_split_per_host() -> None:
    result = run(*THREE_HOSTS)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "split across this host and 2 worker(s)" in out
    assert "worker 10.8.0.2:50052 CPU 0" in out  # the hardware table
    rows = [line for line in out.splitlines() if "10.8.0.3:50052" in line and "layers" in line]
    assert rows and "+ output" in rows[0]
    assert "rpc=10.8.0.2:50052,10.8.0.3:50052" in out
    assert "network: 3 host boundaries" in out


def test_show_hardware_lists_the_workers() -> None:
    result = run("--hardware", BOX, "--worker-profile", W1, "--show-hardware", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["workers"][0]["address"] == "10.8.0.2:50052"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--worker-profile", BOX], "address: missing"),
        (["--worker-profile", W1, "--worker-profile", W1], "worker 10.8.0.2:50052 is given twice"),
        (["--worker", "10.8.0.2"], '--worker 10.8.0.2: expected "HOST:PORT"'),
    ],
)
def test_bad_workers_are_usage_errors(args: list[str], message: str) -> None:
    result = run("--hardware", BOX, *args, "--json")
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


class WorkerError(Exception):
    pass


def fake_rpc(monkeypatch: pytest.MonkeyPatch, answer: Any) -> list[tuple[str, float]]:
    """A stand-in for runtime/rpc.py (the RPC runtime's side): `query_worker` answers `answer`."""
    asked: list[tuple[str, float]] = []

    def query_worker(address: str, timeout: float) -> Worker:
        asked.append((address, timeout))
        if isinstance(answer, Exception):
            raise answer
        return Worker(address, answer)

    module = ModuleType("hermesd.runtime.rpc")
    module.query_worker = query_worker  # type: ignore[attr-defined]
    module.WorkerError = WorkerError  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hermesd.runtime.rpc", module)
    return asked


def test_a_live_worker_is_asked_for_its_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = fake_rpc(monkeypatch, (RemoteDevice("CPU", "cpu", 131072, 117964),))
    result = run(
        *("--hardware", BOX, "--worker", "10.8.0.7:50052", "--worker-profile", W2),
        *("--variant", "hermes-4-405b", "--json"),
    )
    assert result.exit_code == 0, result.output
    assert [a for a, _ in asked] == ["10.8.0.7:50052"]
    # live workers first, then the profiles: the order llama.cpp registers them in
    assert json.loads(result.stdout)["workers"] == ["10.8.0.7:50052", "10.8.0.3:50052"]


def test_a_worker_that_does_not_answer_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_rpc(monkeypatch, WorkerError("worker 10.8.0.7:50052 is unreachable: Connection refused"))
    result = run("--hardware", BOX, "--worker", "10.8.0.7:50052")
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: worker 10.8.0.7:50052 is unreachable: Connection refused"
    assert "Traceback" not in result.output
