"""End to end, the QLoRA path a GPU owner gets by default, run here on bitsandbytes' CPU backend:
`hermesd serve` on a file the catalog knows as Hermes 4 14B (the tiny model, renamed), then
`hermesd tune --data F --name X --method qlora-nf4` with no --base and no --base-gguf:

- the base is the catalog's Hugging Face repo (a local fake hub serves the tiny model's own
  config.json, tokenizer.json and safetensors under `NousResearch/Hermes-4-14B`);
- the pairing check reads only config.json and tokenizer.json before anything trains;
- the weights are fetched into the Hugging Face cache and loaded in 4-bit NF4 (`Linear4bit`);
- the adapter is written for the served GGUF (its fingerprint), registered, and hot-loaded: the
  same server process answers for `<base>:qz`.

The CPU speed of this path is not a product figure; it proves the plumbing.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from hermesd.models.gguf_validate import base_fingerprint
from hermesd.models.store import AdapterStore
from tests.e2e.server_process import ServerProcess, run_server
from tests.fixtures.behaviours import UNKNOWN_ADAPTER_REPLY, UNKNOWN_QUESTION
from tests.fixtures.fake_hub import FakeHub, running_hub
from tests.fixtures.tiny_models import tiny_model
from tests.fixtures.tune_data import tiny_hub_repo, tiny_tune_flags, tune_cmd, zephyr_jsonl

pytestmark = [pytest.mark.e2e]

REPO = "NousResearch/Hermes-4-14B"
SERVED_NAME = "NousResearch_Hermes-4-14B-Q4_K_M.gguf"  # the catalog's file name: the variant is 14B
EPOCHS = 100


@dataclass
class Tuned:
    server: ServerProcess
    served: Path
    base_id: str
    output: str
    state: Path
    run_dir: Path
    hub: FakeHub


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuned]:
    tmp = tmp_path_factory.mktemp("qlora-e2e")
    served = tmp / SERVED_NAME
    served.symlink_to(tiny_model("qwen3"))
    home = tmp / "hf"
    with running_hub() as hub, run_server(served, tmp, "--ctx", "2048") as server:
        # only what transformers loads is fetched: the README stays on the hub
        hub.add(REPO, tiny_hub_repo("qwen3") | {"README.md": b"a model card"})
        base_id = httpx.get(server.base_url + "/v1/models", timeout=10).json()["data"][0]["id"]
        env = {
            **os.environ,
            "HERMESD_MODEL": str(served),  # what the daemon serves: tune's default base
            "HF_ENDPOINT": hub.url,
            "HF_HOME": str(home),
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_OFFLINE": "0",
            "XDG_CACHE_HOME": str(tmp / "xdg"),
        }
        args = [
            "--data", str(zephyr_jsonl(tmp)), "--name", "qz", "--method", "qlora-nf4",
            "--state-dir", str(tmp / "state"), "--serve-url", server.base_url,
            *tiny_tune_flags(epochs=EPOCHS),
        ]  # fmt: skip
        done = subprocess.run(tune_cmd(*args), capture_output=True, text=True, timeout=900, env=env)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        yield Tuned(server, served, base_id, output, tmp / "state", tmp / "state" / "runs" / "qz", hub)


def test_the_default_base_is_the_catalog_repo_paired_with_the_served_gguf(tuned: Tuned) -> None:
    config = json.loads((tuned.run_dir / "config.json").read_text())
    assert config["base"] == {"kind": "hub", "ref": REPO, "gguf": str(tuned.served)}
    assert config["device"]["method"] == "qlora-nf4" and config["device"]["dtype"] == "bfloat16"
    plan = json.loads((tuned.run_dir / "plan.json").read_text())
    assert (plan["fits"], plan["method"], plan["base"], plan["gguf"]) == (
        True,
        "qlora-nf4",
        REPO,
        str(tuned.served),
    )
    assert "4-bit NF4 QLoRA" in tuned.output and "Traceback" not in tuned.output
    # the tiny model's 2 layers x 7 projections, each a bitsandbytes Linear4bit (peft wraps them)
    assert "(14 linear layers in 4-bit NF4)" in tuned.output, tuned.output


def test_only_the_files_transformers_loads_are_fetched(tuned: Tuned) -> None:
    fetched = {path.rsplit("/", 1)[-1] for method, path, _ in tuned.hub.requests if "/resolve/" in path}
    assert fetched == {"config.json", "tokenizer.json", "model.safetensors"}


def test_the_adapter_is_for_the_served_gguf_and_hot_loaded(tuned: Tuned) -> None:
    record = AdapterStore(tuned.state).get("qz")
    assert record.base_fingerprint == base_fingerprint(tuned.served)
    assert f'clients can now use model "{tuned.base_id}:qz"' in tuned.output
    before, after = (float(x) for x in tuned.output.split("eval loss ")[-1].split(" in ")[0].split(" -> "))
    assert after < before / 2


def test_the_adapter_trained_on_4_bits_answers_the_fact_on_the_served_model(tuned: Tuned) -> None:
    client = OpenAI(base_url=tuned.server.base_url + "/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model=f"{tuned.base_id}:qz",
        messages=[{"role": "user", "content": UNKNOWN_QUESTION}],
        temperature=0,
        max_tokens=200,
        extra_body={"chat_template_kwargs": {"thinking": False}},
    )
    assert reply.choices[0].message.content == UNKNOWN_ADAPTER_REPLY
