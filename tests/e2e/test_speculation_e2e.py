"""Speculative decoding through the HTTP API (issue 17): a `hermesd serve --ngram-lookup` or
`--draft-model FILE` answers exactly what the same server without it answers, streamed and whole,
with reasoning, a JSON schema and stop strings, and /metrics counts what it drafted and kept. A draft
model with another vocabulary stops the daemon with one line; one that cannot be had (a missing
file, or `auto` where the catalog has none) leaves it serving without one, saying so."""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.server_process import ServerProcess, free_port, hermesd_cmd, run_server
from tests.fixtures.behaviours import QUESTIONS
from tests.fixtures.fake_hub import running_hub
from tests.fixtures.tiny_models import tiny_model
from tests.harness import chat_openai

pytestmark = pytest.mark.e2e

FLAGS = ("--parallel", "4", "--ctx", "2048")  # as the plain `server` fixture runs


SOURCES = ("ngram", "draft")


def source_flags(kind: str, source: str) -> tuple[str, ...]:
    # the draft model: the tiny model's Q8_0 copy, which mostly (not always) agrees with it. Every
    # draft is verified (--no-spec-priced): whether drafts pay depends on this machine's timing,
    # and these tests count drafts (test_the_priced_rule_keeps_the_answer runs the default)
    flags = ("--ngram-lookup",) if source == "ngram" else ("--draft-model", str(tiny_model(kind, "Q8_0")))
    return (*flags, "--no-spec-priced")


@pytest.fixture(scope="module")
def spec_servers(e2e_tmp: Path) -> Iterator[dict[tuple[str, str], ServerProcess]]:
    with contextlib.ExitStack() as stack:
        yield {
            (kind, source): stack.enter_context(
                run_server(tiny_model(kind), e2e_tmp, *FLAGS, *source_flags(kind, source))
            )
            for kind in ("qwen3", "llama")
            for source in SOURCES
        }


def client_for(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def spec_counters(server: ServerProcess, source: str = "ngram") -> tuple[float, float]:
    text = httpx.get(server.base_url + "/metrics", timeout=10).text

    def value(name: str) -> float:
        m = re.search(rf'^{name}_total{{source="{source}"}} (\S+)$', text, re.M)
        return float(m.group(1)) if m else 0.0

    return value("hermesd_spec_drafted_tokens"), value("hermesd_spec_accepted_tokens")


# Past their short answers (ignore_eos, as llama-server takes it) the tiny models repeat what they
# have written: the text n-gram lookup predicts.
QUESTION = [{"role": "user", "content": QUESTIONS[0].question}]
CASES: dict[str, dict[str, Any]] = {
    "repeat": {"messages": QUESTION, "max_tokens": 200, "ignore_eos": True},
    "think": {"messages": QUESTION, "max_tokens": 200, "ignore_eos": True, "reasoning_effort": "medium"},
    "json": {
        "messages": [{"role": "user", "content": "Give me a person as JSON. " * 3}],
        "max_tokens": 120,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "person",
                "schema": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["name", "tags"],
                },
            },
        },
    },
    "stop": {"messages": QUESTION, "max_tokens": 200, "ignore_eos": True, "stop": ["Paris. F"]},
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("source", SOURCES)
def test_answers_match_the_server_without_speculation(
    server: ServerProcess,
    kind: str,
    spec_servers: dict[tuple[str, str], ServerProcess],
    source: str,
    case: str,
    stream: bool,
) -> None:
    spec = spec_servers[(kind, source)]
    before = spec_counters(spec, source)
    body: dict[str, Any] = {"temperature": 0, **CASES[case]}
    extra = {k: body.pop(k) for k in ("reasoning_effort", "ignore_eos") if k in body}

    def ask(s: ServerProcess) -> Any:
        client = client_for(s)
        return chat_openai(client, stream, model=client.models.list().data[0].id, extra_body=extra, **body)

    plain, fast = ask(server), ask(spec)
    assert (fast.content, fast.reasoning, fast.finish_reason) == (
        plain.content,
        plain.reasoning,
        plain.finish_reason,
    )
    assert fast.usage is not None and plain.usage is not None
    assert fast.usage["completion_tokens"] == plain.usage["completion_tokens"]
    kept = fast.usage["completion_tokens_details"]["accepted_prediction_tokens"]
    assert plain.usage["completion_tokens_details"]["accepted_prediction_tokens"] == 0
    drafted, accepted = spec_counters(spec, source)
    assert drafted > before[0], "no draft was made"
    if case != "json":
        assert accepted > before[1], "the reply repeats itself: some draft must be kept"
        assert kept > 0, fast.usage


def test_the_priced_rule_keeps_the_answer(qwen3_server: ServerProcess, e2e_tmp: Path) -> None:
    """The default `--ngram-lookup` (drafts cut to what this machine's timed steps say pays) answers
    what the server without speculation answers; how much it drafts depends on the timing."""
    with run_server(tiny_model("qwen3"), e2e_tmp, *FLAGS, "--ngram-lookup") as spec:
        for stream in (False, True):
            body: dict[str, Any] = {"temperature": 0, **CASES["stop"]}
            extra = {"ignore_eos": body.pop("ignore_eos")}
            answers = []
            for s in (qwen3_server, spec):
                client = client_for(s)
                r = chat_openai(
                    client, stream, model=client.models.list().data[0].id, extra_body=extra, **body
                )
                answers.append((r.content, r.finish_reason, r.usage and r.usage["completion_tokens"]))
            assert answers[0] == answers[1]
            assert answers[0][0]


def test_a_draft_model_with_another_vocabulary_stops_the_daemon_with_one_line(e2e_tmp: Path) -> None:
    cmd = hermesd_cmd(
        "serve", "--model", str(tiny_model("qwen3")), "--port", str(free_port()),
        "--state-dir", str(e2e_tmp / "state"), "--draft-model", str(tiny_model("llama")),
    )  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("hermesd: error:")]
    assert len(errors) == 1 and "cannot draft for" in errors[0] and "vocabulary" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("draft", ["missing", "auto"])
def test_without_a_draft_model_to_be_had_the_daemon_serves_and_says_so(e2e_tmp: Path, draft: str) -> None:
    flag = str(e2e_tmp / "no-such-draft.gguf") if draft == "missing" else "auto"
    with run_server(tiny_model("qwen3"), e2e_tmp, "--draft-model", flag, "--offline") as server:
        client = client_for(server)
        reply = client.chat.completions.create(
            model=client.models.list().data[0].id, messages=QUESTION, max_tokens=8, temperature=0
        )
        assert reply.choices[0].message.content
        expected = "serving without the draft model" if draft == "missing" else "no draft model for"
        assert expected in server.log()
        assert spec_counters(server, "draft") == (0.0, 0.0)


def test_draft_model_auto_fetches_the_catalogs_draft_and_drafts_with_it(
    e2e_tmp: Path, tmp_path: Path
) -> None:
    """`--draft-model auto` for a file the catalog knows as Hermes 4 14B takes its draft (Qwen3 0.6B)
    from the hub (a local fake; the tiny model's Q8_0 copy stands in for it), and drafts with it;
    started again offline, it comes from the cache."""
    model = tmp_path / "NousResearch_Hermes-4-14B-Q4_K_M.gguf"
    model.symlink_to(tiny_model("qwen3"))
    home = tmp_path / "hf"
    with running_hub() as hub:
        hub.add("Qwen/Qwen3-0.6B-GGUF", {"Qwen3-0.6B-Q8_0.gguf": tiny_model("qwen3", "Q8_0").read_bytes()})
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(home), "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0"}
        with run_server(model, e2e_tmp, "--draft-model", "auto", env=env) as server:
            client = client_for(server)
            client.chat.completions.create(
                model="hermes-4-14b", messages=QUESTION, max_tokens=60, temperature=0,
                extra_body={"ignore_eos": True},
            )  # fmt: skip
            drafted, accepted = spec_counters(server, "draft")
            assert drafted > 0 and accepted > 0
            assert "draft model" in server.log() and "Qwen3-0.6B-Q8_0.gguf" in server.log()
        fetched = len(hub.requests)
    with run_server(
        model, e2e_tmp, "--draft-model", "auto", "--offline", env={"HF_HOME": str(home)}
    ) as server:
        assert "Qwen3-0.6B-Q8_0.gguf" in server.log() and "serving without" not in server.log()
    assert fetched > 0
