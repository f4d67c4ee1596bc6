"""`hermesd serve` with no arguments: it plans for the (profiled) machine, fetches the planned file
from the hub (a local fake speaking the hub's protocol on 127.0.0.1), and serves it; a second start
works offline from the cache. The "14B Q4_K_M" the fake hub serves is the tiny qwen3 test model."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import openai
import pytest

from tests.e2e.server_process import hermesd_cmd, run_server
from tests.fixtures.behaviours import QUESTIONS
from tests.fixtures.fake_hub import running_hub
from tests.fixtures.tiny_models import tiny_model

pytestmark = pytest.mark.e2e

REPO = "bartowski/NousResearch_Hermes-4-14B-GGUF"
FILE = "NousResearch_Hermes-4-14B-Q4_K_M.gguf"
PROFILE = Path(__file__).parents[1] / "fixtures" / "hardware" / "rtx3060-12gb.json"


def ask(base_url: str) -> str:
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)
    ids = [m.id for m in client.models.list().data]
    assert ids == ["hermes-4-14b", FILE.removesuffix(".gguf")]  # the catalog id first
    model = ids[0]
    reply = client.chat.completions.create(
        model=model, temperature=0, messages=[{"role": "user", "content": QUESTIONS[0].question}]
    )
    return reply.choices[0].message.content or ""


@pytest.mark.slow
def test_serve_with_no_model_plans_fetches_and_serves(tmp_path: Path) -> None:
    home = tmp_path / "hf"
    with running_hub() as hub:
        hub.add(REPO, {FILE: tiny_model("qwen3").read_bytes()})
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(home), "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0"}
        # --model is not given: the planner picks 14B Q4_K_M, then it is downloaded. The profile has a
        # 12 GB GPU that the CPU-only engine here cannot use: without --allow-cpu serve refuses
        refused = subprocess.run(
            hermesd_cmd("serve", "--hardware", str(PROFILE), "--state-dir", str(tmp_path / "state")),
            capture_output=True,
            text=True,
            env=dict(os.environ, **env),
            timeout=120,
        )
        assert refused.returncode == 2 and "hermesd setup-gpu" in refused.stderr
        assert "--allow-cpu" in refused.stderr and "RTX 3060" in refused.stderr
        flags = ("--hardware", str(PROFILE), "--parallel", "1", "--allow-cpu")
        with run_server(None, tmp_path, *flags, env=env) as server:
            assert ask(server.base_url) == QUESTIONS[0].answer
            log = server.log()
            assert "hermes-4-14b Q4_K_M" in log and "serving a plan sized for the CPU" in log
            assert "0/40 layers on GPUs" in log and "engine backends CPU; CPU: 3 layers" in log
            metrics = server.metrics()
            assert metrics['hermesd_device_layers{device="CPU",kind="cpu"}'] > 0
            assert metrics['hermesd_engine_backend{backend="CPU"}'] == 1
        assert hub.gets(FILE), "the file was fetched from the (fake) hub"
    # the hub is gone: a second start serves from the cache
    env = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    # ...and, with no --parallel, it runs as many slots as the plan found room for: on a CPU-only
    # machine with 32 GB the same 14B Q4_K_M (already cached) gets 4
    cpu_only = PROFILE.with_name("cpu-32gb.json")
    with run_server(None, tmp_path, "--hardware", str(cpu_only), "--offline", env=env) as server:
        assert ask(server.base_url) == QUESTIONS[0].answer
        assert "(4 slots x 16384 tokens)" in server.log()
