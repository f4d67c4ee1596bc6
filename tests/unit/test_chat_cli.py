"""`hermesd chat` without a daemon: its commands, the stream it reads, the requests it sends, and
how it fails, over httpx's MockTransport (the real daemon is in tests/e2e/test_chat_cli_e2e.py)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from rich.console import Console

from hermesd.cli import chat
from hermesd.cli.chat import (
    CommandError,
    Conversation,
    DaemonAPI,
    DaemonError,
    Delta,
    Screen,
    apply_set,
    ask,
    parse_command,
    parse_event,
    run_command,
)

URL = "http://daemon:8000"


def sse(*chunks: dict[str, Any]) -> bytes:
    lines = [f"data: {json.dumps(c)}\n\n" for c in chunks]
    return ("".join(lines) + "data: [DONE]\n\n").encode()


def delta(**fields: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": None}]}


REPLY = sse(
    {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]},
    delta(reasoning_content="Two and "),
    delta(reasoning_content="three."),
    delta(content="2 + 3 "),
    delta(content="= 5."),
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
)


class Daemon:
    """A scripted daemon: /v1/models lists two ids, chat completions answer REPLY; it keeps what
    it was sent."""

    def __init__(self, reply: bytes = REPLY, status: int = 200, error: str = "") -> None:
        self.reply, self.status, self.error = reply, status, error
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.status != 200:
            return httpx.Response(self.status, json={"error": {"message": self.error, "code": "x"}})
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "hermes-4-14b"}, {"id": "hermes-4-14b:pirate"}]})
        return httpx.Response(200, content=self.reply, headers={"content-type": "text/event-stream"})

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.method == "POST"]

    def api(self, key: str | None = "k1") -> DaemonAPI:
        return DaemonAPI(URL, key, transport=httpx.MockTransport(self))


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        ("/think on", ("think", "on")),
        ("  /MODEL  hermes-4-70b ", ("model", "hermes-4-70b")),
        ("/exit", ("exit", "")),
        ("What is 2+2?", None),
        ("//not a command, a message", None),
        ("a /slash inside", None),
    ],
)
def test_parse_command(line: str, parsed: tuple[str, str] | None) -> None:
    assert parse_command(line) == parsed


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (json.dumps(delta(content="Hi")), Delta(content="Hi")),
        (json.dumps(delta(reasoning_content="hmm")), Delta(reasoning="hmm")),
        (json.dumps(delta(reasoning="hmm")), Delta(reasoning="hmm")),  # vLLM's and Ollama's name
        # --reasoning-field both: the same text twice, shown once
        (json.dumps(delta(reasoning_content="hmm", reasoning="hmm")), Delta(reasoning="hmm")),
        (json.dumps(delta(role="assistant")), None),
        (json.dumps({"choices": []}), None),
        ("[DONE]", None),
    ],
)
def test_parse_event(data: str, expected: Delta | None) -> None:
    assert parse_event(data, URL) == expected


def test_an_error_event_in_the_stream_is_one_line() -> None:
    with pytest.raises(DaemonError, match=r"^hermesd at http://daemon:8000: the server is shutting down$"):
        parse_event(json.dumps({"error": {"message": "the server is shutting down"}}), URL)
    with pytest.raises(DaemonError, match="not JSON"):
        parse_event("{half", URL)


def test_the_request_carries_history_system_options_and_the_think_switch() -> None:
    conv = Conversation(model="m", system="Be brief.")
    body = conv.request("Hi")
    assert body == {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "stream": True,
    }
    assert "think" not in body  # no switch given: the server's default holds
    conv.record("Hi", "Hello.")
    conv.think = False
    apply_set(conv, "temperature 0.2")
    body = conv.request("Again")
    assert body["think"] is False and body["temperature"] == 0.2
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]


def test_set_parses_shows_and_unsets_options() -> None:
    conv = Conversation(model="m")
    assert apply_set(conv, "max_tokens 500") == "max_tokens = 500"
    assert apply_set(conv, "ignore_eos on") == "ignore_eos = True"
    assert conv.options == {"max_tokens": 500, "ignore_eos": True}
    assert "max_tokens=500" in apply_set(conv, "")
    apply_set(conv, "max_tokens")
    assert conv.options == {"ignore_eos": True}
    with pytest.raises(CommandError, match="unknown option 'tools'"):
        apply_set(conv, "tools []")
    with pytest.raises(CommandError, match="top_k"):
        apply_set(conv, "top_k many")


def screen() -> tuple[Screen, io.StringIO]:
    out = io.StringIO()
    return Screen(Console(file=out, force_terminal=False, width=200)), out


def test_commands_change_the_conversation() -> None:
    daemon = Daemon()
    conv, (scr, out) = Conversation(model="hermes-4-14b"), screen()
    api = daemon.api()
    conv.record("q", "a")
    assert run_command(api, conv, "think", "on", scr) and conv.think is True
    run_command(api, conv, "think", "off", scr)
    assert conv.think is False
    with pytest.raises(ValueError, match="on or off"):
        run_command(api, conv, "think", "maybe", scr)
    run_command(api, conv, "reasoning", "hide", scr)
    assert conv.show_reasoning is False
    run_command(api, conv, "model", "hermes-4-14b:pirate", scr)
    assert conv.model == "hermes-4-14b:pirate"
    run_command(api, conv, "model", "", scr)
    assert "* hermes-4-14b:pirate" in out.getvalue() and "  hermes-4-14b\n" in out.getvalue()
    run_command(api, conv, "clear", "", scr)
    assert conv.messages == []
    run_command(api, conv, "help", "", scr)
    assert "/think on|off" in out.getvalue() and "/reasoning show|hide" in out.getvalue()
    with pytest.raises(CommandError, match="unknown command /frobnicate"):
        run_command(api, conv, "frobnicate", "", scr)
    assert run_command(api, conv, "exit", "", scr) is False


@pytest.mark.parametrize("show", [True, False])
def test_an_answer_streams_with_its_reasoning_shown_or_collapsed(show: bool) -> None:
    daemon = Daemon()
    conv, (scr, out) = Conversation(model="hermes-4-14b", think=True, show_reasoning=show), screen()
    ask(daemon.api(), conv, "What is 2 + 3?", scr)
    text = out.getvalue()
    assert text.endswith("2 + 3 = 5.\n")
    assert ("Two and three." in text) is show
    assert ("thought for" in text) is not show
    assert conv.messages[-1] == {"role": "assistant", "content": "2 + 3 = 5."}
    assert conv.last_reasoning == "Two and three."
    (body,) = daemon.bodies()
    assert body["think"] is True and body["stream"] is True and body["model"] == "hermes-4-14b"
    assert daemon.requests[0].headers["authorization"] == "Bearer k1"
    run_command(daemon.api(), conv, "reasoning", "", scr)  # /reasoning alone: the last trace in full
    assert out.getvalue().endswith("Two and three.\n")


class Interrupted(httpx.SyncByteStream):
    """A stream that sends a few chunks, then the user presses Ctrl-C; it records being closed."""

    def __init__(self) -> None:
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield f"data: {json.dumps(delta(content='1 2 3'))}\n\n".encode()
        raise KeyboardInterrupt

    def close(self) -> None:
        self.closed = True


def test_ctrl_c_stops_the_answer_closes_the_stream_and_keeps_what_came() -> None:
    stream = Interrupted()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=stream, headers={"content-type": "text/event-stream"})

    api = DaemonAPI(URL, None, transport=httpx.MockTransport(handler))
    conv, (scr, out) = Conversation(model="m"), screen()
    ask(api, conv, "Count from 1 to 100.", scr)  # no KeyboardInterrupt escapes
    assert stream.closed  # the connection is gone, so the server aborts the generation
    assert out.getvalue() == "1 2 3\n[stopped]\n"
    assert conv.messages[-1] == {"role": "assistant", "content": "1 2 3"}


def test_a_daemon_error_during_a_chat_is_one_line_and_the_message_is_not_kept() -> None:
    daemon = Daemon(status=404, error="The model 'nope' does not exist or is not loaded here")
    conv, (scr, out) = Conversation(model="nope"), screen()
    ask(daemon.api(), conv, "Hi", scr)
    assert (
        out.getvalue()
        == "hermesd at http://daemon:8000: The model 'nope' does not exist or is not loaded here\n"
    )
    assert conv.messages == []


@pytest.fixture
def use_daemon(monkeypatch: pytest.MonkeyPatch) -> Callable[[Daemon], None]:
    def install(daemon: Daemon) -> None:
        monkeypatch.setattr(
            chat,
            "connect",
            lambda url, key: DaemonAPI(url or URL, key, transport=httpx.MockTransport(daemon)),
        )

    return install


def run_pipe(*args: str, stdin: str = "What is 2 + 3?\n") -> Any:
    # CliRunner's standard input is not a terminal: pipe mode
    return CliRunner().invoke(chat.chat_command, list(args), input=stdin)


def test_pipe_mode_prints_only_the_answer(use_daemon: Callable[[Daemon], None]) -> None:
    daemon = Daemon()
    use_daemon(daemon)
    result = run_pipe("--think", "--api-key", "k1")
    assert result.exit_code == 0, result.output
    assert result.stdout == "2 + 3 = 5.\n"  # the reasoning is not in it
    (body,) = daemon.bodies()
    assert body["model"] == "hermes-4-14b"  # the first model the daemon lists
    assert body["messages"] == [{"role": "user", "content": "What is 2 + 3?\n"}] and body["think"] is True
    result = run_pipe("--model", "hermes-4-14b:pirate", "--no-think", "--system", "Be brief.")
    (_, body) = daemon.bodies()
    assert body["model"] == "hermes-4-14b:pirate" and body["think"] is False
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize(
    ("status", "message", "words"),
    [
        (
            401,
            "Incorrect or missing API key.",
            "refused the API key: Incorrect or missing API key. (pass --api-key",
        ),
        (404, "The model 'x' does not exist or is not loaded here", "The model 'x' does not exist"),
        (503, "the model is still loading", "the model is still loading"),
    ],
)
def test_pipe_mode_errors_are_one_line_and_a_failure(
    use_daemon: Callable[[Daemon], None], status: int, message: str, words: str
) -> None:
    use_daemon(Daemon(status=status, error=message))
    result = run_pipe()
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and words in result.stderr
    assert result.stderr.startswith("hermesd: error: hermesd at http://daemon:8000")


def test_pipe_mode_without_a_daemon_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    monkeypatch.setattr(
        chat, "connect", lambda url, key: DaemonAPI(URL, key, transport=httpx.MockTransport(refuse))
    )
    result = run_pipe()
    assert result.exit_code == 1
    assert result.stderr == f"hermesd: error: no hermesd is answering at {URL} (is hermesd serve running?)\n"
    assert "Traceback" not in result.output


def test_pipe_mode_with_nothing_to_ask(use_daemon: Callable[[Daemon], None]) -> None:
    daemon = Daemon()
    use_daemon(daemon)
    result = run_pipe(stdin="  \n")
    assert result.exit_code == 2 and "standard input was empty" in result.stderr
    assert daemon.requests == []


def test_a_stream_that_breaks_off_is_an_error_not_an_answer(use_daemon: Callable[[Daemon], None]) -> None:
    use_daemon(Daemon(reply=sse(delta(content="The capital"))))  # no finish_reason: the server died
    result = run_pipe()
    assert result.exit_code == 1
    assert result.stderr == f"hermesd: error: hermesd at {URL}: the answer broke off before it was finished\n"


def test_an_answer_cut_at_the_token_limit_says_so() -> None:
    reply = sse(delta(content="1 2 3"), {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    conv, (scr, out) = Conversation(model="m"), screen()
    ask(Daemon(reply=reply).api(), conv, "Count from 1 to 100.", scr)
    assert out.getvalue() == "1 2 3\n[cut short: max_tokens or the end of the context]\n"


def test_the_key_comes_from_the_daemons_settings_first_of_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERMESD_API_KEY", "k1,k2")  # how `hermesd serve` reads its keys
    api = chat.connect("http://127.0.0.1:9", None)
    assert api.api_key == "k1" and api.url == "http://127.0.0.1:9"
    assert chat.connect("http://127.0.0.1:9", "given").api_key == "given"
