"""`hermesd serve --worker` without --model: the planner sees the workers, and serve loads with the
plan's engine split (n_gpu_layers, tensor_split in llama.cpp's device order, exactly the workers the
plan uses, in its order). Here because cli/serve.py imports the engine; nothing is loaded."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hermesd.cli import autoplan, serve
from hermesd.models.catalog import load_catalog
from hermesd.runtime.hardware import load_profile, worker_from_profile
from hermesd.runtime.planner import Plan, PlanRequest, engine_split, plan
from hermesd.server.settings import Settings

WORKERS = Path(__file__).resolve().parents[1] / "fixtures" / "workers"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HERMESD_CATALOG_OVERLAY", str(tmp_path / "overlay.json"))


def test_serve_loads_the_plans_split_over_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    box = load_profile(WORKERS / "box-128gb.json")
    # a third worker the plan does not need: serve must not register it
    w1, w2 = (worker_from_profile(WORKERS / f"{n}.json") for n in ("w1-128gb", "w2-128gb"))
    spare = replace(w2, address="10.8.0.9:50052")
    workers = (w1, w2, spare)
    access = autoplan.engine_access(box, real_engine=True)  # this process's engine: CPU only here
    assert access is not None
    seen: dict[str, Any] = {}

    def choose(**kwargs: Any) -> tuple[Path, Plan]:
        seen.update(kwargs)
        chosen = plan(kwargs["hardware"], load_catalog(), PlanRequest(variant="hermes-4-405b"))
        assert isinstance(chosen, Plan)
        return Path("/models/hermes-4-405b.gguf"), chosen

    monkeypatch.setattr(autoplan, "choose_model_for_serve", choose)
    settings = Settings(worker=[w.address for w in workers], variant="hermes-4-405b")
    planned = serve.settings_from_plan(settings, access, workers)
    assert seen["hardware"].workers == workers
    expected = plan(
        replace(access.planning_hardware(), workers=workers),
        load_catalog(),
        PlanRequest(variant="hermes-4-405b"),
    )
    assert isinstance(expected, Plan) and expected.workers
    split = engine_split(expected)
    assert planned.worker == list(split.workers) and spare.address not in planned.worker
    assert planned.gpu_layers == split.n_gpu_layers
    assert planned.tensor_split == list(split.tensor_split)
    assert serve.engine_config(planned, Path("/m.gguf")).rpc_workers == split.workers
