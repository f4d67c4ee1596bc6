"""`hermesd serve --upstream` with a vLLM upstream: hermesd loads an adapter's PEFT
folder through vLLM's runtime LoRA API and sends `<base>:<adapter>` requests to the upstream's name
for it; a JSON schema goes as `structured_outputs.grammar`. vLLM cannot run here, so the upstream is a
fake that records the calls (tests/serving/fake_vllm.py): these tests show what hermesd sends, not
that vLLM accepts it. Everything on hermesd's side is real (the store, the registry, the HTTP API)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hermesd.runtime.engine.upstream import UpstreamConfig, UpstreamEngine
from hermesd.runtime.engine.upstream_dialect import Dialect
from hermesd.runtime.errors import AdapterError
from tests.fixtures.store_adapters import register
from tests.serving.fake_vllm import MODEL, fake_vllm

MOUNT = "/mnt/hermesd-adapters"  # where the vLLM hosts mount hermesd's adapter store


def connect(url: str, state: Path) -> UpstreamEngine:
    return UpstreamEngine.connect(
        UpstreamConfig(url, api_key="k-123", adapter_root=MOUNT, adapter_store=str(state / "adapters"))
    )


async def chat(http: Any, model: str) -> dict[str, Any]:
    r = await http.post(
        "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_an_adapter_loads_into_vllm_and_serves_base_colon_adapter(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    register(tmp_path, "zephyr")
    with fake_vllm() as (url, rec):
        engine = connect(url, tmp_path)
        assert (engine.dialect.kind, engine.info.context_length, engine.info.architecture) == (
            "vllm",
            4096,
            "qwen3",
        )
        async with make_client(engine) as (http, _):
            base = (await http.get("/v1/models")).json()["data"][0]["id"]
            r = await http.post("/v1/adapters", json={"name": "zephyr"})
            assert r.status_code == 200, r.text
            assert rec.bodies("/v1/load_lora_adapter") == [
                {"lora_name": "hermesd-zephyr", "lora_path": f"{MOUNT}/zephyr"}
            ]
            body = await chat(http, f"{base}:zephyr")
            assert body["choices"][0]["message"]["content"] == "Hello there."
            assert body["model"] == f"{base}:zephyr"
            sent = rec.bodies("/v1/completions")[-1]
            assert sent["model"] == "hermesd-zephyr" and sent["stream"] is True
            assert sent["prompt"].startswith("<|im_start|>") and sent["prompt"].endswith("assistant\n")
            await chat(http, base)
            assert rec.bodies("/v1/completions")[-1]["model"] == MODEL

            r = await http.delete("/v1/adapters/zephyr")
            assert r.status_code == 200 and r.json()["loaded"] is False
            assert rec.bodies("/v1/unload_lora_adapter") == [{"lora_name": "hermesd-zephyr"}]
            r = await http.post("/v1/chat/completions", json={
                "model": f"{base}:zephyr", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
            assert r.status_code == 404
        assert rec.auth == {"Bearer k-123"}


@pytest.mark.parametrize(
    ("arch", "peft", "words"),
    [("qwen3", False, "no PEFT adapter"), ("llama", True, "architecture 'llama'")],
)
async def test_an_adapter_the_upstream_cannot_take_is_refused(
    make_client: Callable[..., Any], tmp_path: Path, arch: str, peft: bool, words: str
) -> None:
    register(tmp_path, "bad", arch=arch, peft=peft)
    with fake_vllm() as (url, rec):
        async with make_client(connect(url, tmp_path)) as (http, _):
            r = await http.post("/v1/adapters", json={"name": "bad"})
            assert r.status_code == 400 and words in r.json()["error"]["message"]
        assert rec.bodies("/v1/load_lora_adapter") == []


def test_an_upstream_without_a_lora_api_refuses_with_one_message(tmp_path: Path) -> None:
    with fake_vllm() as (url, _):
        engine = connect(url, tmp_path)
    llama = UpstreamEngine(engine.config, Dialect("llama-server"), engine.info, adds_bos=False)
    with pytest.raises(AdapterError, match="cannot load adapters at run time"):
        llama.load_adapter("zephyr", str(tmp_path / "adapters" / "zephyr" / "adapter.gguf"))


async def test_a_json_schema_goes_to_vllm_as_a_grammar_and_not_after_reasoning(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    }
    with fake_vllm() as (url, rec):
        async with make_client(connect(url, tmp_path)) as (http, _):
            base = (await http.get("/v1/models")).json()["data"][0]["id"]
            r = await http.post("/v1/chat/completions", json={"model": base, **body, "think": False})
            assert r.status_code == 200, r.text
            grammar = rec.bodies("/v1/completions")[-1]["structured_outputs"]["grammar"]
            assert "root ::=" in grammar and '\\"a\\"' in grammar
            r = await http.post("/v1/chat/completions", json={"model": base, **body, "think": True})
            assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_by_upstream"
            assert "thinking off" in r.json()["error"]["message"]
        assert len(rec.bodies("/v1/completions")) == 1  # the refused one never reached the upstream
