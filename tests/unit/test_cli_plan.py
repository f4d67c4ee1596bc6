"""`hermesd plan`, `pull`, `models`, `catalog` and the serve auto-plan, through click's CliRunner.

Downloads go to a fake hub on 127.0.0.1 (tests/fixtures/fake_hub.py) with an HF cache under
tmp_path; nothing reaches the network.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from hermesd.cli.autoplan import choose_model_for_serve
from hermesd.cli.catalog_cmd import catalog_group
from hermesd.cli.models_cmd import models_command
from hermesd.cli.plan import plan_command
from hermesd.cli.pull import pull_command
from hermesd.models.catalog import load_catalog
from hermesd.runtime.hardware import load_profile, to_profile_json
from hermesd.runtime.planner import PlanRequest, plan, plan_to_json
from tests.fixtures.fake_hub import FakeHub, point_hf_at, running_hub

PROFILES = Path(__file__).resolve().parents[1] / "fixtures" / "hardware"
REPO_14B = "bartowski/NousResearch_Hermes-4-14B-GGUF"
FILE_Q4 = "NousResearch_Hermes-4-14B-Q4_K_M.gguf"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real HF cache, no catalog overlay from the user's home, no non-loopback sockets."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("HERMESD_CATALOG_OVERLAY", str(tmp_path / "overlay.json"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"test tried to reach {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def run(command: Any, *args: str) -> Result:
    # rich sizes its tables from COLUMNS, not from click's terminal width
    return CliRunner().invoke(command, list(args), terminal_width=200, env={"COLUMNS": "200"})


@pytest.mark.parametrize(
    "profile,expected",
    [
        # why: 12 GB holds 14B Q4_K_M (~9 GB) with 16k context; larger variants would spill to RAM
        ("rtx3060-12gb", "Hermes 4 14B Q4_K_M — entirely on the GPUs"),
        # why: 48 GB holds 70B Q4_K_M (~42.5 GB) entirely
        ("a6000-48gb", "Hermes 4 70B Q4_K_M — entirely on the GPUs"),
        # why: the CPU-only box runs 14B in RAM, fastest option at Q4_K_M or better
        ("cpu-32gb", "Hermes 4 14B Q4_K_M — on the CPU"),
    ],
)
def test_plan_shows_hardware_choice_and_arithmetic(profile: str, expected: str) -> None:
    result = run(plan_command, "--hardware", str(PROFILES / f"{profile}.json"))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Hardware (profile" in out and expected in out
    assert "Placement" in out and "Arithmetic:" in out and "KV cache per layer" in out
    assert "n_gpu_layers=" in out and "Why:" in out


@pytest.mark.parametrize("profile", ["rtx4080-16gb", "2x3090-24gb", "rtx4090-24gb-512gb-ram"])
def test_plan_json_is_the_planner_result(profile: str) -> None:
    path = PROFILES / f"{profile}.json"
    result = run(plan_command, "--hardware", str(path), "--json", "--parallel", "2")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    expected = plan(load_profile(path), load_catalog(), PlanRequest(parallel=2))
    assert doc == json.loads(json.dumps(plan_to_json(expected)))
    assert doc["parallel"] == 2 and doc["fits"] is True


def test_plan_options_reach_the_planner() -> None:
    args = ["--hardware", str(PROFILES / "rtx4080-16gb.json"), "--json"]
    result = run(plan_command, *args, "--quant", "Q8_0", "--ctx", "4096", "--kv-type", "q8_0")
    doc = json.loads(result.stdout)
    assert (doc["quant"], doc["context"], doc["kv_type"], doc["full_offload"]) == ("Q8_0", 4096, "q8_0", True)
    speed = json.loads(
        run(
            plan_command, "--hardware", str(PROFILES / "rtx4090-24gb.json"), "--json", "--prefer", "speed"
        ).stdout
    )
    assert speed["variant"] == "hermes-4-14b" and speed["full_offload"] is True
    pinned = json.loads(run(plan_command, *args, "--variant", "hermes-4.3-36b").stdout)
    assert pinned["variant"] == "hermes-4.3-36b"


def test_nothing_fits_exits_non_zero_with_the_reason() -> None:
    path = str(PROFILES / "cpu-4gb.json")
    human = run(plan_command, "--hardware", path)
    assert human.exit_code == 1
    assert "GiB missing" in human.stderr and "Traceback" not in human.output
    machine = run(plan_command, "--hardware", path, "--json")
    assert machine.exit_code == 1
    doc = json.loads(machine.stdout)
    assert doc["fits"] is False and "GiB missing" in doc["reason"] and doc["missing_bytes"] > 0


@pytest.mark.parametrize(
    "content,args,message",
    [
        ('{"gpus": [{"name": "x"}], "ram_total_mib": 8}', [], r"gpus\[0\]\.memory_total_mib: missing"),
        ("{broken", [], "not valid JSON"),
        ('{"gpus": [], "ram_total_mib": 8192}', ["--variant", "hermes-9"], "unknown variant 'hermes-9'"),
        ('{"gpus": [], "ram_total_mib": 8192}', ["--variant", "14b", "--ctx", "65536"], "at most 40960"),
    ],
)
def test_bad_input_is_a_usage_error(tmp_path: Path, content: str, args: list[str], message: str) -> None:
    profile = tmp_path / "box.json"
    profile.write_text(content)
    result = run(plan_command, "--hardware", str(profile), *args)
    assert result.exit_code == 2
    assert re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.output


def test_show_hardware_json_is_the_profile() -> None:
    path = PROFILES / "mixed-4090-3060.json"
    result = run(plan_command, "--hardware", str(path), "--show-hardware", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == to_profile_json(load_profile(path))
    here = run(plan_command, "--show-hardware", "--json")  # discovery on this machine
    assert here.exit_code == 0 and "ram_total_mib" in json.loads(here.stdout)
    table = run(plan_command, "--hardware", str(path), "--show-hardware")
    assert "RTX 3060" in table.stdout and "Choice" not in table.stdout


# -- with a hub


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    with running_hub() as fake:
        fake.add(
            REPO_14B, {FILE_Q4: os.urandom(200_000), "NousResearch_Hermes-4-14B-Q8_0.gguf": os.urandom(1000)}
        )
        point_hf_at(fake, monkeypatch, tmp_path / "hf")
        yield fake


def test_pull_without_a_ref_fetches_what_the_plan_picks(hub: FakeHub, tmp_path: Path) -> None:
    result = run(pull_command, "--hardware", str(PROFILES / "rtx3060-12gb.json"))
    assert result.exit_code == 0, result.output
    assert "hermes-4-14b Q4_K_M" in result.stderr
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.name == FILE_Q4 and path.read_bytes() == hub.repos[REPO_14B].files[FILE_Q4]
    assert tmp_path / "hf" / "hub" in path.parents


def test_pull_ref_then_models_lists_it(hub: FakeHub) -> None:
    assert run(pull_command, "14b:q8_0").exit_code == 0
    listed = json.loads(run(models_command, "--json").stdout)
    assert [(m["variant"], m["quant"], m["size_bytes"], m["complete"]) for m in listed] == [
        ("hermes-4-14b", "Q8_0", 1000, True)
    ]
    table = run(models_command)
    assert "hermes-4-14b" in table.stdout and "Q8_0" in table.stdout


def test_pull_offline_without_the_file(hub: FakeHub) -> None:
    result = run(pull_command, "14b:Q4_K_M", "--offline")
    assert result.exit_code == 1
    assert "offline mode is on" in result.stderr and hub.requests == []


def test_pull_unknown_ref_is_a_usage_error(hub: FakeHub) -> None:
    result = run(pull_command, "405b:BF16")
    assert result.exit_code == 2 and "has no quant 'BF16'" in result.stderr


def test_models_with_an_empty_cache() -> None:
    result = run(models_command)
    assert result.exit_code == 0 and "no GGUF models" in result.stdout


def test_catalog_refresh_and_show(hub: FakeHub, tmp_path: Path) -> None:
    result = run(catalog_group, "refresh")
    assert result.exit_code == 0, result.output
    assert "repository not found" in result.stderr  # the other catalog repos are not on this hub
    assert "hermes-4-14b Q4_K_M: 1 file(s)" in result.stdout
    shown = json.loads(run(catalog_group, "show", "--json").stdout)
    q4 = next(e for e in shown["entries"] if (e["variant"], e["quant"]) == ("hermes-4-14b", "Q4_K_M"))
    assert q4["size_bytes"] == 200_000 and q4["size_kind"] == "exact"
    assert shown["refreshed_at"]
    assert (tmp_path / "overlay.json").is_file()


def test_serve_auto_plan_downloads_then_reuses_the_cache(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs: dict[str, Any] = dict(
        hardware_file=PROFILES / "rtx3060-12gb.json",
        variant=None,
        quant=None,
        ctx=None,
        parallel=1,
        kv_type="f16",
        prefer="quality",
        console=Console(file=io.StringIO()),
    )
    path, chosen = choose_model_for_serve(offline=False, **kwargs)
    assert path.name == FILE_Q4 and (chosen.variant, chosen.quant) == ("hermes-4-14b", "Q4_K_M")
    assert chosen.n_gpu_layers == 41 and chosen.context == 16384
    # Cached now: a second start needs no hub at all, even offline.
    before = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again, _ = choose_model_for_serve(offline=True, **kwargs)
    assert again == path and len(hub.requests) == before
