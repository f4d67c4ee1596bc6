"""End to end: `hermesd serve` on a tiny model, `hermesd tune` teaches it a fact it cannot know, and
the same server process answers it for `<base>:zephyr` through the openai client, with and without
thinking, while the base id keeps the base's answer.

Also at the engine level (no HTTP): the adapter from the store, hot-loaded into a running
LlamaCppEngine, changes the answer for requests that name it and for no others.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from hermesd.models.store import AdapterStore
from tests.e2e.server_process import ServerProcess, run_server
from tests.fixtures.behaviours import UNKNOWN_ADAPTER_REPLY, UNKNOWN_QUESTION, UNKNOWN_REPLY
from tests.fixtures.tiny_models import tiny_model
from tests.fixtures.tune_data import ZEPHYR_REASONING, tiny_tune_flags, tune_cmd, zephyr_jsonl

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Full-batch steps on the zephyr set: enough for the tiny model to learn the think trace exactly.
EPOCHS = 100


@dataclass
class Tuned:
    server: ServerProcess
    pid: int
    base_id: str
    tune_output: str
    state: Path


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuned]:
    tmp = tmp_path_factory.mktemp("tune-e2e")
    model = tiny_model("qwen3")
    with run_server(model, tmp, "--parallel", "2", "--ctx", "2048") as server:
        pid = server.pid
        base_id = httpx.get(server.base_url + "/v1/models", timeout=10).json()["data"][0]["id"]
        # run_server gives the daemon --state-dir tmp/state: tune registers into the same store
        args = [
            "--base", str(model), "--data", str(zephyr_jsonl(tmp)), "--name", "zephyr",
            "--state-dir", str(tmp / "state"), "--serve-url", server.base_url,
            *tiny_tune_flags(epochs=EPOCHS),
        ]  # fmt: skip
        done = subprocess.run(tune_cmd(*args), capture_output=True, text=True, timeout=900)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        yield Tuned(server, pid, base_id, output, tmp / "state")


def _chat(server: ServerProcess, model: str, thinking: bool) -> Any:
    client = OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)
    return (
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": UNKNOWN_QUESTION}],
            temperature=0,
            max_tokens=200,
            extra_body={"chat_template_kwargs": {"thinking": thinking}},
        )
        .choices[0]
        .message
    )


def test_tune_reports_progress_and_eval_loss_and_loads_the_adapter(tuned: Tuned) -> None:
    out = tuned.tune_output
    assert "with reasoning (thinking on): 3   direct (thinking off): 3" in out
    assert "eval loss before:" in out and f"step {EPOCHS}/{EPOCHS}" in out
    before, after = (float(x) for x in out.split("eval loss ")[-1].split(" in ")[0].split(" -> "))
    assert after < before / 2
    assert "has not learned" not in out  # it has: the adapter answers the fact (the next test)
    assert f'clients can now use model "{tuned.base_id}:zephyr"' in out


def test_the_adapter_answers_the_fact_and_the_base_does_not(tuned: Tuned) -> None:
    assert _chat(tuned.server, f"{tuned.base_id}:zephyr", thinking=False).content == UNKNOWN_ADAPTER_REPLY
    assert _chat(tuned.server, tuned.base_id, thinking=False).content == UNKNOWN_REPLY


def test_with_thinking_on_the_reply_carries_the_trained_reasoning(tuned: Tuned) -> None:
    message = _chat(tuned.server, f"{tuned.base_id}:zephyr", thinking=True)
    assert message.content == UNKNOWN_ADAPTER_REPLY
    assert getattr(message, "reasoning_content", None) == ZEPHYR_REASONING


def test_no_restart_and_the_adapter_is_listed(tuned: Tuned) -> None:
    assert tuned.server.proc.poll() is None and tuned.server.pid == tuned.pid
    models = httpx.get(tuned.server.base_url + "/v1/models", timeout=10).json()["data"]
    entry = next(m for m in models if m["id"] == f"{tuned.base_id}:zephyr")
    assert entry["parent"] == tuned.base_id
    adapters = httpx.get(tuned.server.base_url + "/v1/adapters", timeout=10).json()["data"]
    listed = next(a for a in adapters if a["name"] == "zephyr")
    assert listed["loaded"] is True and listed["id"] == f"{tuned.base_id}:zephyr"
    assert listed["base_fingerprint"] == AdapterStore(tuned.state).get("zephyr").base_fingerprint


def test_unload_then_the_adapter_id_is_gone_and_load_brings_it_back(tuned: Tuned) -> None:
    url = tuned.server.base_url
    assert httpx.delete(f"{url}/v1/adapters/zephyr", timeout=10).json()["loaded"] is False
    assert httpx.delete(f"{url}/v1/adapters/zephyr", timeout=10).status_code == 404
    gone = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": f"{tuned.base_id}:zephyr", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert gone.status_code == 404
    assert httpx.post(f"{url}/v1/adapters", json={"name": "zephyr"}, timeout=30).status_code == 200
    assert httpx.post(f"{url}/v1/adapters", json={"name": "zephyr"}, timeout=30).status_code == 409
    assert httpx.post(f"{url}/v1/adapters", json={"name": "nope"}, timeout=30).status_code == 404
    assert _chat(tuned.server, f"{tuned.base_id}:zephyr", thinking=False).content == UNKNOWN_ADAPTER_REPLY
    assert tuned.server.pid == tuned.pid


def test_engine_hot_load_changes_only_requests_that_name_the_adapter(tuned: Tuned) -> None:
    """The same adapter file in an in-process engine: hot-loading at the engine level."""
    from hermesd.models.chat import ChatOptions, Message
    from hermesd.models.formats.hermes import render_hermes
    from hermesd.runtime.engine.context_settings import ContextSettings
    from hermesd.runtime.engine.llama_model import LlamaModelConfig
    from hermesd.runtime.engine.llamacpp import EngineConfig, LlamaCppEngine
    from hermesd.runtime.engine.protocol import GenerationRequest, SamplingParams, TextEvent

    adapter = AdapterStore(tuned.state).get("zephyr").path
    prompt = render_hermes([Message(role="user", content=UNKNOWN_QUESTION)], ChatOptions(), "chatml").text
    engine = LlamaCppEngine(
        EngineConfig(
            LlamaModelConfig(path=tiny_model("qwen3")), ContextSettings(ctx=2048, parallel=2, threads=2)
        )
    )

    async def answer(adapters: tuple[tuple[str, float], ...]) -> str:
        request = GenerationRequest(prompt, 64, SamplingParams(temperature=0.0), adapters=adapters)
        stream = await engine.submit(request)
        return "".join([e.text async for e in stream if isinstance(e, TextEvent)])

    async def scenario() -> list[str]:
        out = [await answer(())]
        engine.load_adapter("zephyr", str(adapter))
        out += await asyncio.gather(answer((("zephyr", 1.0),)), answer(()))
        engine.unload_adapter("zephyr")
        out.append(await answer(()))
        return out

    try:
        before, adapted, alongside, after = asyncio.run(scenario())
    finally:
        engine.close()
    assert (before, adapted, alongside, after) == (
        UNKNOWN_REPLY,
        UNKNOWN_ADAPTER_REPLY,
        UNKNOWN_REPLY,
        UNKNOWN_REPLY,
    )


def test_an_adapter_whose_manifest_was_edited_to_claim_another_base_is_refused(tuned: Tuned) -> None:
    """The trained file, registered with a manifest that names another base: the file is the
    authority, and a manifest that disagrees with it is refused (tests/serving/test_adapters.py has
    the other cases)."""
    from hermesd.models.gguf_validate import base_fingerprint

    store = AdapterStore(tuned.state)
    zephyr = store.get("zephyr")
    other = base_fingerprint(tiny_model("llama"))
    store.register(
        "wrongbase", zephyr.path, dict(zephyr.manifest, base={"fingerprint": other, "name": "llama"})
    )
    response = httpx.post(f"{tuned.server.base_url}/v1/adapters", json={"name": "wrongbase"}, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "adapter_manifest_mismatch"
    assert "disagree" in error["message"] and other in error["message"]
    assert zephyr.base_fingerprint in error["message"]  # what the file records
    assert set(error) >= {"message", "type", "param", "code"}


def test_synthesize_thinking_asks_the_daemon_for_traces(tuned: Tuned, tmp_path: Path) -> None:
    """--synthesize-thinking with the running daemon: the base model reasons about a question it
    knows; the run folder keeps the direct original and the new thinking copy."""
    from hermesd.runtime.tune.data import load_jsonl
    from tests.fixtures.behaviours import QUESTIONS
    from tests.fixtures.tune_data import write_jsonl

    france = QUESTIONS[0]
    data = write_jsonl(tmp_path / "direct.jsonl", [{"prompt": france.question, "completion": france.answer}])
    args = [
        "--base", str(tiny_model("qwen3")), "--data", str(data), "--name", "synth",
        "--state-dir", str(tuned.state), "--synthesize-thinking", tuned.server.base_url, "--dry-run",
    ]  # fmt: skip
    done = subprocess.run(tune_cmd(*args), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 thinking traces added" in done.stdout
    assert "with reasoning (thinking on): 1   direct (thinking off): 1" in done.stdout
    saved = load_jsonl(tuned.state / "runs/synth/data-with-thinking.jsonl").conversations
    assert [c.messages[-1].reasoning_content for c in saved] == [None, france.reasoning]
    assert all(c.messages[-1].content == france.answer for c in saved)


async def _mixed_adapters(base_url: str, bodies: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:

        async def one(body: dict[str, Any]) -> Any:
            r = await http.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["message"]

        alone = [await one(b) for b in bodies]
        together = await asyncio.gather(*(one(b) for b in bodies))
    return alone, list(together)


def test_requests_for_different_adapters_interleave_without_mixing(tuned: Tuned) -> None:
    """8 concurrent requests over two adapter sets (base, base:zephyr) in one context with 2 slots:
    each answer equals the one the same request gets alone; the KV cache of one adapter set is
    never reused for the other (a measured llama.cpp pitfall)."""
    questions = [UNKNOWN_QUESTION, "What is the capital of France?", "Count from 1 to 100."]
    bodies = []
    for i in range(8):
        model = f"{tuned.base_id}:zephyr" if i % 2 else tuned.base_id
        bodies.append(
            {
                "model": model,
                "temperature": 0,
                "max_tokens": 30 + 10 * i,
                "messages": [{"role": "user", "content": questions[i % 3]}],
            }
        )
    alone, together = asyncio.run(_mixed_adapters(tuned.server.base_url, bodies))
    assert together == alone
    answers = {
        (b["model"], b["messages"][0]["content"]): a["content"] for b, a in zip(bodies, alone, strict=True)
    }
    assert answers[(tuned.base_id, UNKNOWN_QUESTION)] == UNKNOWN_REPLY
    assert answers[(f"{tuned.base_id}:zephyr", UNKNOWN_QUESTION)] == UNKNOWN_ADAPTER_REPLY


def test_the_store_keeps_the_peft_adapter_beside_the_gguf(tuned: Tuned) -> None:
    # what an upstream's runtime LoRA API loads (`hermesd serve --upstream` with vLLM)
    from safetensors.numpy import load_file

    from hermesd.models.gguf_lora import read_adapter_info

    folder = tuned.state / "adapters" / "zephyr"
    config = json.loads((folder / "adapter_config.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == manifest["lora"]["rank"]
    weights = load_file(str(folder / "adapter_model.safetensors"))
    assert weights and all(".lora_A." in k or ".lora_B." in k for k in weights)
    assert len(weights) == read_adapter_info(folder / "adapter.gguf").tensor_count
