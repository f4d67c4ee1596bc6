"""`hermesd chat`: a terminal chat with the running daemon, over its own OpenAI-compatible API.

It is a client like any other: it streams `/v1/chat/completions` with httpx and reads nothing of the
server's insides, so what it shows is what every client gets. Interactive on a terminal (reasoning
dimmed, slash commands, Ctrl-C stops the answer); with standard input from a pipe it sends all of it
as one message and prints only the answer (`echo 'What is 2+2?' | hermesd chat`).

The small HTTP client here (`DaemonAPI`) is also what `hermesd ps` uses: both speak to the daemon
with a user key, and both turn every failure into one line.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

import click
import httpx

from hermesd.cli.daemon_address import fail, local_defaults
from hermesd.runtime.tune.daemon import URL_ENV

API_KEY_ENV = "HERMESD_API_KEY"
PROMPT = ">>> "
F = TypeVar("F", bound=Callable[..., Any])


class DaemonError(Exception):
    """A failure talking to the daemon, already worded as the one line the user sees."""


def server_message(body: Any) -> str | None:
    """The message of the server's error shape (`{"error": {"message": ...}}`), if it is one."""
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return str(message) if message else None


def error_message(status: int, body: Any, url: str) -> str:
    """One line for an HTTP error: the server's own message (every API of hermesd sends one)."""
    message = server_message(body)
    if status == 401:
        return (
            f"hermesd at {url} refused the API key: {message or 'unauthorized'} "
            f"(pass --api-key or set {API_KEY_ENV})"
        )
    return f"hermesd at {url}: {message or f'HTTP {status}'}"


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


@dataclass(frozen=True)
class Delta:
    """What one streamed chunk adds: answer text, reasoning text, and the finish reason at the end."""

    content: str = ""
    reasoning: str = ""
    finish_reason: str | None = None


def parse_event(data: str, url: str) -> Delta | None:
    """One SSE `data:` payload of a chat completion stream; None for `[DONE]` and empty chunks.
    An error event (the server's contract once streaming began) raises DaemonError."""
    if data == "[DONE]":
        return None
    try:
        chunk = json.loads(data)
    except ValueError:
        raise DaemonError(f"hermesd at {url} sent a stream that is not JSON: {data[:80]!r}") from None
    if not isinstance(chunk, dict):
        return None
    if "error" in chunk:
        raise DaemonError(f"hermesd at {url}: {server_message(chunk) or 'the answer failed'}")
    choices = chunk.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return None
    delta = choices[0].get("delta") or {}
    # `--reasoning-field both` sends the same text under both names: take one of them
    reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
    content = delta.get("content") or ""
    finish = choices[0].get("finish_reason")
    if not (content or reasoning or finish):
        return None
    return Delta(content=content, reasoning=reasoning, finish_reason=finish)


class DaemonAPI:
    """The daemon's user API, for a command-line client: JSON GETs and one streamed chat."""

    def __init__(self, url: str, api_key: str | None, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.transport = transport  # tests pass a MockTransport
        self._http = self._client()

    def _client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        # no read timeout: a long prompt on a CPU may take minutes before its first token
        timeout = httpx.Timeout(30.0, read=None)
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=self.transport)

    def reset(self) -> None:
        """A fresh connection pool, after Ctrl-C broke off a request half way."""
        self._http.close()
        self._http = self._client()

    def close(self) -> None:
        self._http.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError:
            raise DaemonError(f"no hermesd is answering at {self.url} (is hermesd serve running?)") from None
        except httpx.TimeoutException:
            raise DaemonError(f"hermesd at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise DaemonError(f"cannot talk to hermesd at {self.url}: {exc}") from None

    def get(self, path: str) -> dict[str, Any]:
        with self._errors():
            response = self._http.get(path)
        body = _body(response)
        if response.status_code >= 400:
            raise DaemonError(error_message(response.status_code, body, self.url))
        if not isinstance(body, dict):
            raise DaemonError(f"hermesd at {self.url} answered {path} with something that is not JSON")
        return body

    def model_ids(self) -> list[str]:
        data = self.get("/v1/models").get("data") or []
        return [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")]

    @contextmanager
    def stream_chat(self, body: dict[str, Any]) -> Iterator[Iterator[Delta]]:
        """The deltas of one streamed chat completion. Leaving the block early (Ctrl-C) closes the
        connection, and the server aborts the generation when its client goes away."""
        with self._errors(), self._http.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code >= 400:
                response.read()
                raise DaemonError(error_message(response.status_code, _body(response), self.url))
            yield self._deltas(response)

    def _deltas(self, response: httpx.Response) -> Iterator[Delta]:
        finished = False
        with self._errors():
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                delta = parse_event(line[5:].strip(), self.url)
                if delta is not None:
                    finished = finished or delta.finish_reason is not None
                    yield delta
        if not finished:  # the daemon died or the connection broke: the text so far is not the answer
            raise DaemonError(f"hermesd at {self.url}: the answer broke off before it was finished")


# -- the conversation and its settings ---------------------------------------------------------------

# `/set NAME VALUE`: request fields of /v1/chat/completions a user may want to change mid-chat.
OPTIONS: dict[str, Callable[[str], Any]] = {
    "temperature": float,
    "top_p": float,
    "top_k": int,
    "min_p": float,
    "repeat_penalty": float,
    "presence_penalty": float,
    "frequency_penalty": float,
    "seed": int,
    "max_tokens": int,
    "max_reasoning_tokens": int,
    "ignore_eos": lambda v: _switch(v, "ignore_eos"),
}


def _switch(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in ("on", "true", "yes", "1"):
        return True
    if v in ("off", "false", "no", "0"):
        return False
    raise ValueError(f"{name}: on or off, not {value!r}")


@dataclass
class Conversation:
    model: str
    system: str | None = None
    think: bool | None = None  # None: the server's default (`hermesd serve --think`)
    show_reasoning: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)
    last_reasoning: str = ""

    def request(self, user_text: str) -> dict[str, Any]:
        """The body that asks the next answer, with `user_text` as the newest message."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [*system, *self.messages, {"role": "user", "content": user_text}],
            "stream": True,
            **self.options,
        }
        if self.think is not None:
            body["think"] = self.think  # the per-request think switch (server/reasoning_controls.py)
        return body

    def record(self, user_text: str, answer: str) -> None:
        self.messages += [{"role": "user", "content": user_text}, {"role": "assistant", "content": answer}]


HELP = """\
/think on|off          reasoning on or off for the next answers (no argument: show the setting)
/reasoning show|hide   show the reasoning dimmed as it comes, or collapse it to one line
/reasoning             print the last answer's reasoning in full
/model [NAME]          switch to model NAME (no argument: list the served models)
/set [NAME [VALUE]]    set a request option (temperature, top_p, top_k, min_p, seed, max_tokens,
                       max_reasoning_tokens, repeat_penalty, presence_penalty, frequency_penalty,
                       ignore_eos); without VALUE: unset it; without NAME: show them
/clear                 forget the conversation
/help                  this text
/exit                  leave (or Ctrl-D); Ctrl-C stops the answer being written"""


def parse_command(line: str) -> tuple[str, str] | None:
    """(`name`, `argument`) of a slash command, or None for a message to the model."""
    text = line.strip()
    if not text.startswith("/") or text.startswith("//"):
        return None
    name, _, arg = text[1:].partition(" ")
    return name.lower(), arg.strip()


class CommandError(Exception):
    pass


def apply_set(conv: Conversation, arg: str) -> str:
    """`/set`: show, unset or set one request option; the line to print."""
    if not arg:
        shown = ", ".join(f"{k}={v}" for k, v in conv.options.items())
        return f"options: {shown or 'none (the server defaults)'}"
    name, _, value = arg.partition(" ")
    if name not in OPTIONS:
        raise CommandError(f"unknown option {name!r}; one of: {', '.join(OPTIONS)}")
    if not value.strip():
        conv.options.pop(name, None)
        return f"{name}: the server's default"
    try:
        conv.options[name] = OPTIONS[name](value.strip())
    except ValueError as exc:
        raise CommandError(f"{name}: {exc}") from None
    return f"{name} = {conv.options[name]}"


# -- the terminal ----------------------------------------------------------------------------------


class Screen:
    """Writes the answer and its reasoning to the terminal: reasoning dimmed, or one collapsed line."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.in_reasoning = False
        self.started = 0.0

    def write(self, text: str, style: str = "") -> None:
        from rich.text import Text

        self.console.print(Text(text, style=style), end="", soft_wrap=True, highlight=False)

    def line(self, text: str, style: str = "") -> None:
        self.write(text + "\n", style)

    def reasoning(self, conv: Conversation, text: str) -> None:
        if not self.in_reasoning:
            self.in_reasoning, self.started = True, time.monotonic()
            if not conv.show_reasoning:
                self.write("thinking…", "dim italic")
        if conv.show_reasoning:
            self.write(text, "dim")

    def end_reasoning(self, conv: Conversation) -> None:
        if not self.in_reasoning:
            return
        self.in_reasoning = False
        if conv.show_reasoning:
            self.write("\n\n")
            return
        seconds = time.monotonic() - self.started
        if self.console.is_terminal:
            self.console.file.write("\r\x1b[2K")  # replace "thinking…" with the collapsed line
        else:
            self.write("\n")
        self.line(f"▸ thought for {seconds:.1f} s (/reasoning shows it)", "dim italic")


def ask(api: DaemonAPI, conv: Conversation, user_text: str, screen: Screen) -> None:
    """Stream one answer to the screen and keep it in the conversation; Ctrl-C ends it early (what
    came so far is kept), a daemon error is one line and the message is not kept."""
    answer: list[str] = []
    reasoning: list[str] = []
    stopped = False
    finish: str | None = None
    try:
        with api.stream_chat(conv.request(user_text)) as deltas:
            for d in deltas:
                finish = d.finish_reason or finish
                if d.reasoning:
                    reasoning.append(d.reasoning)
                    screen.reasoning(conv, d.reasoning)
                if d.content:
                    screen.end_reasoning(conv)
                    answer.append(d.content)
                    screen.write(d.content)
    except KeyboardInterrupt:
        stopped = True
        api.reset()
    except DaemonError as exc:
        screen.end_reasoning(conv)
        screen.line(("\n" if answer else "") + str(exc), "red")
        return
    screen.end_reasoning(conv)
    conv.last_reasoning = "".join(reasoning)
    screen.line("")
    if stopped:
        screen.line("[stopped]", "dim")
    elif finish == "length":
        screen.line("[cut short: max_tokens or the end of the context]", "dim")
    if answer or not stopped:  # a stopped answer is kept as far as it went, as chat pages do
        conv.record(user_text, "".join(answer))


def run_command(api: DaemonAPI, conv: Conversation, name: str, arg: str, screen: Screen) -> bool:
    """Carry out one slash command; False when the user leaves."""
    if name in ("exit", "quit", "bye"):
        return False
    if name == "help":
        screen.line(HELP)
    elif name == "clear":
        conv.messages.clear()
        conv.last_reasoning = ""
        screen.line("conversation cleared", "dim")
    elif name == "think":
        if arg:
            conv.think = _switch(arg, "/think")
        state = {None: "the server's default", True: "on", False: "off"}[conv.think]
        screen.line(f"reasoning: {state}", "dim")
    elif name == "reasoning":
        if not arg:
            screen.line(conv.last_reasoning or "(no reasoning in the last answer)", "dim")
        elif arg in ("show", "hide"):
            conv.show_reasoning = arg == "show"
            screen.line(f"reasoning is {'shown' if conv.show_reasoning else 'collapsed'}", "dim")
        else:
            raise CommandError("/reasoning show, /reasoning hide, or /reasoning alone for the last trace")
    elif name == "model":
        if arg:
            conv.model = arg
            screen.line(f"model: {arg}", "dim")
        else:
            for model_id in api.model_ids():
                screen.line(("* " if model_id == conv.model else "  ") + model_id)
    elif name == "set":
        screen.line(apply_set(conv, arg), "dim")
    else:
        raise CommandError(f"unknown command /{name}; /help lists them")
    return True


def interactive(api: DaemonAPI, conv: Conversation) -> None:
    import readline  # noqa: F401  (line editing and history for input())

    from rich.console import Console

    screen = Screen(Console(highlight=False))
    screen.line(f"hermesd chat with {conv.model} at {api.url}. /help for commands, Ctrl-D to leave.", "dim")
    while True:
        try:
            line = input(PROMPT)
        except EOFError:
            screen.line("")
            return
        except KeyboardInterrupt:  # at the prompt: drop the line, stay
            screen.line("\n(Ctrl-D or /exit to leave)", "dim")
            continue
        if not line.strip():
            continue
        command = parse_command(line)
        if command is None:
            ask(api, conv, line, screen)
            continue
        try:
            if not run_command(api, conv, *command, screen):
                return
        except (CommandError, ValueError, DaemonError) as exc:
            screen.line(str(exc), "red")
        except KeyboardInterrupt:  # e.g. during /model's request
            api.reset()
            screen.line("")


def answer_pipe(api: DaemonAPI, conv: Conversation, text: str, out: TextIO) -> None:
    """Pipe mode: the answer alone, streamed to `out` (no reasoning, no decoration)."""
    with api.stream_chat(conv.request(text)) as deltas:
        for d in deltas:
            if d.content:
                out.write(d.content)
                out.flush()
    out.write("\n")
    out.flush()


def user_daemon_options(fn: F) -> F:
    """--url and --api-key of a command that uses the daemon's user API (`chat`, `ps`)."""
    # no click envvar: HERMESD_API_KEY is the daemon's own setting (a comma-separated list), read
    # through its settings by local_defaults, which takes the first key of it
    fn = click.option(
        "--api-key",
        default=None,
        help=f"API key of the daemon (default: the first one in its settings, {API_KEY_ENV} included)",
    )(fn)
    fn = click.option(
        "--url",
        envvar=URL_ENV,
        default=None,
        help=f"URL of the running hermesd (also {URL_ENV}; default: host and port from its settings)",
    )(fn)
    return fn


def connect(url: str | None, api_key: str | None) -> DaemonAPI:
    defaults = local_defaults() if url is None or api_key is None else None
    return DaemonAPI(
        url or (defaults.serve_url if defaults else ""), api_key or (defaults.user_key if defaults else None)
    )


@click.command("chat")
@user_daemon_options
@click.option("--model", default=None, help="model id to talk to (default: the first one the daemon serves)")
@click.option("--system", default=None, help="a system message to start the conversation with")
@click.option("--think/--no-think", default=None, help="reasoning on or off (default: the daemon's)")
@click.option(
    "--set",
    "options",
    multiple=True,
    metavar="NAME=VALUE",
    help="a request option, as /set does (e.g. temperature=0, max_tokens=500); repeatable",
)
def chat_command(
    url: str | None,
    api_key: str | None,
    model: str | None,
    system: str | None,
    think: bool | None,
    options: tuple[str, ...],
) -> None:
    """Chat with the running daemon in the terminal; with a pipe, answer standard input and exit."""
    preset = Conversation(model="")
    for option in options:
        name, eq, value = option.partition("=")
        try:
            if not (eq and value.strip()):
                raise CommandError("give it as NAME=VALUE")
            apply_set(preset, f"{name.strip()} {value.strip()}")
        except CommandError as exc:
            fail(f"--set {option}: {exc}", code=2)
    api = connect(url, api_key)
    piped = not sys.stdin.isatty()
    try:
        text = sys.stdin.read() if piped else ""
        if piped and not text.strip():
            fail("nothing to ask: standard input was empty", code=2)
        if model is None:
            ids = api.model_ids()
            if not ids:
                fail(f"hermesd at {api.url} serves no model")
            model = ids[0]
        conv = Conversation(model=model, system=system, think=think, options=preset.options)
        if piped:
            answer_pipe(api, conv, text, sys.stdout)
        else:
            interactive(api, conv)
    except DaemonError as exc:
        fail(str(exc))
    except KeyboardInterrupt:  # pipe mode (interactive mode catches its own)
        sys.exit(130)
    finally:
        api.close()
