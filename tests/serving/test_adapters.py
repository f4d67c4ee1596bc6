"""POST /v1/adapters with real adapter files (written by hermesd's own LoRA writer) over a fake engine.

The base fingerprint recorded in the adapter file is the authority: the store's manifest is a cache
of it, so a manifest edited to claim another base is refused, whichever way it lies. A bad adapter
name gets the same message from the HTTP endpoint and from the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from hermesd.cli.adapters_cmd import adapters_group
from hermesd.cli.tune import tune_command
from hermesd.models.gguf_lora import write_lora_gguf
from hermesd.models.gguf_validate import base_fingerprint
from hermesd.models.store import AdapterStore
from tests.fixtures.bad_ggufs import build_good_model
from tests.serving.fake_engine import FakeEngine

MODEL = "fake-model"
RANK = 2


@pytest.fixture
def served(tmp_path: Path) -> FakeEngine:
    """A fake engine whose model file is a real (tiny, well-formed) GGUF, so it has a fingerprint."""
    (tmp_path / "models").mkdir()
    base = build_good_model(tmp_path / "models" / f"{MODEL}.gguf")
    return FakeEngine(path=str(base), architecture="llama")


@pytest.fixture
def other_base(served: FakeEngine, tmp_path: Path) -> str:
    """The fingerprint of another model: same writer, another architecture."""
    return base_fingerprint(build_good_model(tmp_path / "models" / "other.gguf", arch="qwen3"))


def adapter_file(path: Path, fingerprint: str | None) -> Path:
    rng = np.random.default_rng(0)
    module = "base_model.model.model.layers.0.self_attn.v_proj"
    write_lora_gguf(
        path,
        arch="llama",
        config={"num_attention_heads": 2},
        lora_state={
            f"{module}.lora_A.weight": rng.standard_normal((RANK, 8)),
            f"{module}.lora_B.weight": rng.standard_normal((8, RANK)),
        },
        alpha=4.0,
        rank=RANK,
        base_fingerprint=fingerprint,
    )
    return path


def register(state: Path, name: str, file_fingerprint: str | None, manifest_fingerprint: str | None) -> None:
    """An adapter file trained (as its file says) on `file_fingerprint`, registered with a manifest
    that claims `manifest_fingerprint`."""
    path = adapter_file(state / f"{name}-src.gguf", file_fingerprint)
    AdapterStore(state).register(name, path, {"base": {"fingerprint": manifest_fingerprint, "name": "x"}})


async def post(make_client: Callable[..., Any], engine: FakeEngine, name: str) -> tuple[int, dict[str, Any]]:
    async with make_client(engine) as (http, _):
        r = await http.post("/v1/adapters", json={"name": name})
        return r.status_code, r.json()


async def test_an_adapter_for_the_served_base_loads_and_is_listed(
    make_client: Callable[..., Any], served: FakeEngine, tmp_path: Path
) -> None:
    mine = base_fingerprint(served.path)
    register(tmp_path, "good", mine, mine)
    async with make_client(served) as (http, engine):
        r = await http.post("/v1/adapters", json={"name": "good"})
        assert r.status_code == 200, r.text
        assert r.json()["loaded"] is True and r.json()["base_fingerprint"] == mine
        assert engine.loaded_adapters == {"good": str(AdapterStore(tmp_path).get("good").path)}
        ids = [m["id"] for m in (await http.get("/v1/models")).json()["data"]]
        assert f"{MODEL}:good" in ids
        listed = (await http.get("/v1/adapters")).json()["data"]
        assert [(a["name"], a["loaded"]) for a in listed] == [("good", True)]
        assert (await http.delete("/v1/adapters/good")).json()["loaded"] is False
        assert engine.loaded_adapters == {}
        assert f"{MODEL}:good" not in [m["id"] for m in (await http.get("/v1/models")).json()["data"]]


async def test_a_manifest_edited_to_claim_another_base_is_refused(
    make_client: Callable[..., Any], served: FakeEngine, other_base: str, tmp_path: Path
) -> None:
    mine = base_fingerprint(served.path)
    register(tmp_path, "edited", mine, other_base)
    status, body = await post(make_client, served, "edited")
    assert status == 400 and body["error"]["code"] == "adapter_manifest_mismatch"
    message = body["error"]["message"]
    assert "disagree" in message and other_base in message and mine in message
    assert served.loaded_adapters == {}


async def test_an_adapter_for_another_base_whose_manifest_claims_the_served_one_is_refused(
    make_client: Callable[..., Any], served: FakeEngine, other_base: str, tmp_path: Path
) -> None:
    """The manifest alone would let it through (it names the served base); the file does not."""
    register(tmp_path, "disguised", other_base, base_fingerprint(served.path))
    status, body = await post(make_client, served, "disguised")
    assert status == 400 and body["error"]["code"] == "adapter_manifest_mismatch"
    assert other_base in body["error"]["message"]
    assert served.loaded_adapters == {}


@pytest.mark.parametrize(
    ("recorded", "words"),
    [("other", "another base"), (None, "records no base fingerprint")],
)
async def test_an_adapter_file_for_another_or_no_base_is_refused(
    make_client: Callable[..., Any],
    served: FakeEngine,
    other_base: str,
    tmp_path: Path,
    recorded: str | None,
    words: str,
) -> None:
    fingerprint = other_base if recorded else None
    register(tmp_path, "wrong", fingerprint, fingerprint)  # an honest manifest
    status, body = await post(make_client, served, "wrong")
    assert status == 400 and body["error"]["code"] == "wrong_base_model"
    assert words in body["error"]["message"]
    assert served.loaded_adapters == {}


async def test_a_damaged_adapter_file_is_refused(
    make_client: Callable[..., Any], served: FakeEngine, tmp_path: Path
) -> None:
    mine = base_fingerprint(served.path)
    register(tmp_path, "cut", mine, mine)
    path = AdapterStore(tmp_path).get("cut").path
    path.write_bytes(path.read_bytes()[:-8])
    status, body = await post(make_client, served, "cut")
    assert status == 400 and body["error"]["code"] == "invalid_adapter_file"
    assert "cut short" in body["error"]["message"] or "ends at byte" in body["error"]["message"]


@pytest.mark.parametrize("name", ["Bad Name!", "../escape", "", "x" * 65, "UPPER"])
async def test_a_bad_name_gets_the_same_message_from_http_and_the_cli(
    make_client: Callable[..., Any], served: FakeEngine, tmp_path: Path, name: str
) -> None:
    status, body = await post(make_client, served, name)
    assert status == 400 and body["error"]["param"] == "name"
    message = body["error"]["message"]
    assert message.startswith("invalid adapter name")
    daemon = ["--state-dir", str(tmp_path), "--serve-url", "http://127.0.0.1:9", "--api-key", "k"]
    runner = CliRunner()
    for command in (["load", name], ["unload", name], ["rm", name]):
        result = runner.invoke(adapters_group, [*command, *daemon])
        assert result.exit_code == 1, result.output
        assert result.output.strip() == f"hermesd: error: {message}", command
    if not name:
        return  # `tune` says --name is required
    tuned = runner.invoke(
        tune_command, ["--base", served.path, "--data", str(tmp_path / "d.jsonl"), "--name", name, *daemon]
    )
    assert tuned.exit_code == 1, tuned.output
    assert tuned.output.strip().endswith(f"hermesd: error: {message}")
