"""`hermesd serve` as a user meets it: quantized weights, embedded templates, bad files, disconnects."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.server_process import ServerProcess, hermesd_cmd, run_server
from tests.fixtures.bad_ggufs import ABORTING_HPARAMS, with_hparams
from tests.fixtures.behaviours import QUESTIONS
from tests.fixtures.tiny_models import tiny_model
from tests.harness import chat_openai

pytestmark = pytest.mark.e2e

# The Hermes-4-14B template's system-prompt lines (tests/unit/data/hermes4_14b_system.jinja), then
# plain ChatML turns: served through the sandboxed GGUF-template path, `thinking` must reach it.
THINKING_TEMPLATE = (
    (Path(__file__).parents[1] / "unit" / "data" / "hermes4_14b_system.jinja").read_text()
    + "{%- for m in messages %}{%- if m.role != 'system' %}"
    "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def first_model(server: ServerProcess) -> str:
    return str(client(server).models.list().data[0].id)


@pytest.mark.slow
def test_quantized_model_serves_without_crashing(e2e_tmp: Path) -> None:
    """Q8_0 weights: the default llama-cpp-python build dies with SIGILL here unless hermesd keeps
    llama.cpp's AMX/repack buffers off."""
    with run_server(tiny_model("qwen3", "Q8_0"), e2e_tmp, "--parallel", "1") as server:
        q = QUESTIONS[0]
        for stream in (False, True):
            r = chat_openai(
                client(server),
                stream,
                model=first_model(server),
                temperature=0,
                messages=[{"role": "user", "content": q.question}],
                extra_body={"think": True},
            )
            assert (r.reasoning, r.content) == (q.reasoning, q.answer)
        assert server.proc.poll() is None


@pytest.mark.slow
def test_embedded_template_renders_in_the_sandbox_with_thinking(e2e_tmp: Path) -> None:
    model = tiny_model("qwen3", hermes=False, chat_template=THINKING_TEMPLATE)
    with run_server(model, e2e_tmp, "--parallel", "1") as server:
        assert "chat format gguf-template" in server.log()
        q = QUESTIONS[0]
        on = chat_openai(
            client(server),
            False,
            model=first_model(server),
            temperature=0,
            messages=[{"role": "user", "content": q.question}],
            extra_body={"chat_template_kwargs": {"enable_thinking": True}},
        )
        off = chat_openai(
            client(server),
            True,
            model=first_model(server),
            temperature=0,
            messages=[{"role": "user", "content": q.question}],
        )
        assert (on.reasoning, on.content) == (q.reasoning, q.answer)
        assert (off.reasoning, off.content) == ("", q.answer)


def test_disconnect_frees_the_slot_before_the_reply_ends(e2e_tmp: Path) -> None:
    """A client that hangs up mid-stream frees its slot: with one slot, the next request is answered
    only after the first one left it, and the first one left cancelled, long before its end.

    Order of events, not timing: no deadline or sleep; the second request's answer is the moment
    after which the first one's end must be counted.
    """
    with run_server(tiny_model("qwen3"), e2e_tmp, "--parallel", "1", "--ctx", "4096") as server:
        longest = 4000  # what the context allows: with ignore_eos, the reply runs until it is cut
        body = {"model": first_model(server), "prompt": "zq zq zq", "temperature": 0}
        before = server.metrics()
        with (
            httpx.Client(timeout=60) as http,
            http.stream(
                "POST",
                server.base_url + "/v1/completions",
                json=dict(body, max_tokens=longest, ignore_eos=True, stream=True),
            ) as r,
        ):
            lines = r.iter_lines()
            for _ in range(4):
                next(lines)
        # the slot's one sequence was generating; this request waits for it
        nxt = httpx.post(server.base_url + "/v1/completions", json=dict(body, max_tokens=3), timeout=60)
        assert nxt.status_code == 200
        after = server.metrics()
    cancelled = 'hermesd_requests_finished_total{reason="cancelled"}'
    assert after.get(cancelled, 0) == before.get(cancelled, 0) + 1
    generated = after["hermesd_generated_tokens_total"] - before["hermesd_generated_tokens_total"]
    assert generated - nxt.json()["usage"]["completion_tokens"] < longest, generated
    assert after["hermesd_requests_running"] == 0


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(hermesd_cmd(*args), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "make", ["missing", "directory", "not-gguf", "truncated", "huge-count", *ABORTING_HPARAMS]
)
def test_bad_model_file_is_one_clear_line(tmp_path: Path, make: str) -> None:
    path = tmp_path / "model.gguf"
    if make == "directory":
        path.mkdir()
    elif make == "not-gguf":
        path.write_text("hello")
    elif make == "truncated":
        path.write_bytes(tiny_model("qwen3").read_bytes()[:5000])
    elif make == "huge-count":
        data = bytearray(tiny_model("qwen3").read_bytes())
        data[8:16] = (2**62).to_bytes(8, "little")  # tensor count
        path.write_bytes(bytes(data))
    elif make in ABORTING_HPARAMS:  # well-formed, but llama.cpp would abort the process on it
        with_hparams(tiny_model("qwen3"), path, ABORTING_HPARAMS[make][0])
    r = run_cli("serve", "--model", str(path), "--port", "0")
    assert r.returncode > 0  # an exit, not a signal
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(path) in lines[0], r.stderr
    if make in ABORTING_HPARAMS:
        assert f"qwen3.{ABORTING_HPARAMS[make][1]}" in lines[0]


HOSTILE_TEMPLATE = (
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}"
    "{% for m in messages %}{{ m.content }}{% endfor %}"
)


def test_hostile_template_in_a_model_file_is_refused_per_request(e2e_tmp: Path) -> None:
    model = tiny_model("qwen3", hermes=False, chat_template=HOSTILE_TEMPLATE)
    with run_server(model, e2e_tmp, "--parallel", "1") as server:
        with pytest.raises(openai.BadRequestError) as err:
            client(server).chat.completions.create(
                model=first_model(server), messages=[{"role": "user", "content": "hi"}]
            )
        assert "template" in str(err.value).lower()
        assert httpx.get(server.base_url + "/health").status_code == 200
