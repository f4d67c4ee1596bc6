"""GET /v1/status over a fake engine, and `hermesd ps` rendering what it answers.

The status reads the engine's live counters (slots busy and waiting), the load report (memory per
device), the registry (model ids, loaded adapters) and the app's start time (uptime)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from click.testing import CliRunner

from hermesd.cli import ps as ps_module
from hermesd.cli.chat import DaemonAPI
from hermesd.models.gguf_validate import base_fingerprint
from hermesd.runtime.engine.protocol import DeviceUse, EngineStats, ModelInfo
from hermesd.server.app import create_app
from hermesd.server.settings import Settings
from tests.fixtures.bad_ggufs import build_good_model
from tests.serving.fake_engine import FakeEngine
from tests.serving.test_adapters import register

GIB = 2**30
DEVICES = (
    DeviceUse("CUDA0", "gpu", 20, model_bytes=5 * GIB, kv_bytes=GIB, compute_bytes=GIB // 2),
    DeviceUse("CPU", "cpu", 1, model_bytes=GIB // 4),
)


class BusyEngine(FakeEngine):
    """A fake engine with four slots, three busy and two requests waiting, on a GPU and the CPU."""

    @property
    def info(self) -> ModelInfo:
        return dataclasses.replace(
            super().info, parallel=4, train_context_length=40960, devices=DEVICES, n_params=14_000_000_000
        )

    def stats(self) -> EngineStats:
        return EngineStats(running=3, waiting=2, slots=4)


async def test_status_reports_model_slots_context_memory_and_uptime(make_client: Callable[..., Any]) -> None:
    async with make_client(BusyEngine(context=8192)) as (http, _):
        r = await http.get("/v1/status")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "ok"
        assert body["model"]["id"] == "fake-model" and body["model"]["file"] == "fake-model.gguf"
        assert "/models" not in r.text  # the file's name only, never the server's directories
        assert body["slots"] == {"total": 4, "busy": 3, "waiting": 2}
        assert body["context"] == {"per_slot": 8192, "trained": 40960}
        assert body["adapters"] == []
        gpu, cpu = body["devices"]
        assert gpu["name"] == "CUDA0" and gpu["kind"] == "gpu" and gpu["layers"] == 20
        assert gpu["total_bytes"] == 5 * GIB + GIB + GIB // 2 and cpu["total_bytes"] == GIB // 4
        first = body["uptime_s"]
        assert first >= 0
        await asyncio.sleep(0.05)
        assert (await http.get("/v1/status")).json()["uptime_s"] >= first + 0.04


@pytest.fixture
def served(tmp_path: Path) -> FakeEngine:
    """A fake engine over a real tiny GGUF, so adapters made for it load."""
    (tmp_path / "models").mkdir()
    return FakeEngine(
        path=str(build_good_model(tmp_path / "models" / "fake-model.gguf")), architecture="llama"
    )


async def test_a_loaded_adapter_is_listed_and_an_unloaded_one_is_not(
    make_client: Callable[..., Any], served: FakeEngine, tmp_path: Path
) -> None:
    mine = base_fingerprint(served.path)
    register(tmp_path, "pirate", mine, mine)
    async with make_client(served) as (http, _):
        assert (await http.post("/v1/adapters", json={"name": "pirate"})).status_code == 200
        (adapter,) = (await http.get("/v1/status")).json()["adapters"]
        assert adapter["name"] == "pirate" and adapter["id"] == "fake-model:pirate"
        assert (await http.delete("/v1/adapters/pirate")).status_code == 200
        assert (await http.get("/v1/status")).json()["adapters"] == []


async def test_status_needs_a_user_key_like_the_other_routes(make_client: Callable[..., Any]) -> None:
    async with make_client(api_key=["user-key"], admin_api_key=["admin-key"]) as (http, _):
        assert (await http.get("/v1/status")).status_code == 401
        bad = await http.get("/v1/status", headers={"Authorization": "Bearer wrong"})
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
        for key in ("user-key", "admin-key"):
            ok = await http.get("/v1/status", headers={"Authorization": f"Bearer {key}"})
            assert ok.status_code == 200 and ok.json()["status"] == "ok"


async def test_status_answers_while_the_model_loads(tmp_path: Path) -> None:
    release = threading.Event()

    def slow_factory() -> FakeEngine:
        release.wait(10)
        return FakeEngine()

    app = create_app(Settings(state_dir=tmp_path), slow_factory)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            loading = (await http.get("/v1/status")).json()
            assert loading["status"] == "loading" and "model" not in loading and loading["uptime_s"] >= 0
            release.set()
            for _ in range(200):
                body = (await http.get("/v1/status")).json()
                if body["status"] == "ok":
                    break
                await asyncio.sleep(0.01)
            assert body["status"] == "ok" and body["model"]["id"] == "fake-model"


async def test_ps_renders_the_status_as_tables_and_json(
    make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_client(BusyEngine(context=8192)) as (http, _):
        answer = (await http.get("/v1/status")).json()
    answer["uptime_s"] = 3725.0

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/status"
        assert request.headers["authorization"] == "Bearer k1"
        return httpx.Response(200, json=answer)

    monkeypatch.setattr(
        ps_module, "connect", lambda url, key: DaemonAPI(url, key, transport=httpx.MockTransport(handler))
    )
    runner = CliRunner()
    args = ["--url", "http://daemon:1", "--api-key", "k1"]
    table = runner.invoke(ps_module.ps_command, args, terminal_width=200)
    assert table.exit_code == 0, table.output
    out = table.output
    assert "fake-model" in out and "14.0B parameters" in out
    assert "3 busy, 2 waiting, 4 in all" in out
    assert "8192 tokens per slot (trained: 40960)" in out
    assert "1h 02m 05s" in out and "none loaded" in out
    assert "CUDA0" in out and "6.50 GiB" in out and "256.0 MiB" in out
    as_json = runner.invoke(ps_module.ps_command, [*args, "--json"])
    assert as_json.exit_code == 0
    assert json.loads(as_json.output) == answer
