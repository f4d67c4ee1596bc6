"""`hermesd serve --upstream URL` in front of a real upstream: a second hermesd serving the tiny model.

The answers through the front (greedy) are byte-identical to the upstream's own answers to the same
chats, whole and streamed: the front renders the prompt, the upstream only completes it, and the
front parses reasoning and tool calls and builds the grammars. The upstream wants an API key, which
the front reads from HERMESD_UPSTREAM_KEY.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.server_process import ServerProcess, run_server
from tests.e2e.upstream_cases import CASES, FRANCE, answer, client, comparable
from tests.fixtures.tiny_models import tiny_model

pytestmark = pytest.mark.e2e
KEY = "upstream-secret"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("upstream")
    with run_server(tiny_model("qwen3"), tmp, "--parallel", "2", "--ctx", "1024", "--api-key", KEY) as server:
        yield server


@pytest.fixture(scope="module")
def front(upstream: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("front")
    with run_server(None, tmp, "--upstream", upstream.base_url, env={"HERMESD_UPSTREAM_KEY": KEY}) as server:
        yield server


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("case", list(CASES))
def test_answers_equal_the_upstreams_own(
    upstream: ServerProcess, front: ServerProcess, case: str, stream: bool
) -> None:
    direct = answer(client(upstream, KEY), case, stream)
    via = answer(client(front), case, stream)
    assert comparable(via) == comparable(direct)
    assert via.content or via.tool_calls  # every case answers something


def test_the_front_describes_the_upstreams_model(upstream: ServerProcess, front: ServerProcess) -> None:
    up = httpx.get(upstream.base_url + "/props", headers={"Authorization": f"Bearer {KEY}"}).json()
    mine = httpx.get(front.base_url + "/props").json()
    assert mine["default_generation_settings"]["n_ctx"] == up["default_generation_settings"]["n_ctx"] == 1024
    assert mine["chat_template"] == up["chat_template"]
    assert (mine["bos_token"], mine["eos_token"]) == (up["bos_token"], up["eos_token"])
    listed = client(front).models.list().data[0].model_dump()
    assert listed["context_length"] == 1024
    assert httpx.get(front.base_url + "/health").json() == {"status": "ok"}
    status = httpx.get(front.base_url + "/v1/status").json()  # what `hermesd ps` shows
    assert status["model"]["architecture"] == "qwen3" and status["context"]["per_slot"] == 1024


def test_count_tokens_is_the_upstreams_count(upstream: ServerProcess, front: ServerProcess) -> None:
    body = {"model": "x", "max_tokens": 1, "messages": [{"role": "user", "content": FRANCE.question}]}
    # the Anthropic count is the rendered prompt's tokens; the upstream's usage says the same number
    n = httpx.post(front.base_url + "/v1/messages/count_tokens", json=dict(body, model=_id(front))).json()
    r = client(upstream, KEY).chat.completions.create(
        model=_id(upstream, KEY), messages=body["messages"], max_tokens=1, temperature=0
    )
    assert r.usage is not None and n["input_tokens"] == r.usage.prompt_tokens > 0


def test_a_prompt_longer_than_the_context_is_the_upstreams_400(front: ServerProcess) -> None:
    long = "word " * 1500
    with pytest.raises(openai.BadRequestError) as err:
        client(front).chat.completions.create(
            model=_id(front), messages=[{"role": "user", "content": long}], max_tokens=4
        )
    assert err.value.code == "context_length_exceeded"
    assert "maximum context length is 1024 tokens" in err.value.message


def test_metrics_count_what_went_through_the_upstream(front: ServerProcess) -> None:
    before = front.metrics()
    client(front).chat.completions.create(
        model=_id(front), messages=[{"role": "user", "content": FRANCE.question}], temperature=0
    )
    after = front.metrics()
    assert after["hermesd_generated_tokens_total"] > before.get("hermesd_generated_tokens_total", 0)


def test_a_wrong_upstream_key_is_one_line_at_start(upstream: ServerProcess, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("# the upstream's key\nnot-the-key\n")
    with run_server(None, tmp_path, "--upstream", upstream.base_url, "--upstream-key-file", str(key_file),
                    wait=False) as server:  # fmt: skip
        assert server.proc.wait(timeout=60) == 2
        errors = [line for line in server.log().splitlines() if line.startswith("hermesd: error:")]
    assert len(errors) == 1 and "refused hermesd's credentials" in errors[0]
    assert "not-the-key" not in server.log()


def _id(server: ServerProcess, key: str = "unused") -> str:
    return str(client(server, key).models.list().data[0].id)


ASK = [{"role": "user", "content": FRANCE.question}]


def _text(path: str, body: dict[str, object]) -> str:
    if path == "/v1/messages":
        return str(body["content"][0]["text"])  # type: ignore[index]
    if path == "/api/chat":
        return str(body["message"]["content"])  # type: ignore[index]
    message = next(o for o in body["output"] if o["type"] == "message")  # type: ignore[attr-defined]
    return str(message["content"][0]["text"])


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/messages", {"max_tokens": 100, "temperature": 0, "messages": ASK}),
        ("/api/chat", {"stream": False, "options": {"temperature": 0}, "messages": ASK}),
        ("/v1/responses", {"temperature": 0, "input": FRANCE.question}),
    ],
    ids=["anthropic", "ollama", "responses"],
)  # fmt: skip
def test_the_other_apis_answer_as_the_upstream_does(
    upstream: ServerProcess, front: ServerProcess, path: str, body: dict[str, object]
) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    direct = httpx.post(
        upstream.base_url + path, json={**body, "model": _id(upstream, KEY)}, headers=auth, timeout=60
    )
    via = httpx.post(front.base_url + path, json={**body, "model": _id(front)}, timeout=60)
    assert direct.status_code == via.status_code == 200, via.text
    assert _text(path, via.json()) == _text(path, direct.json()) == FRANCE.answer
