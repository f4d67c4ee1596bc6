"""The remote engine: `hermesd serve --upstream URL` generates on another OpenAI-compatible server.

hermesd still renders every chat with its own Hermes formats, parses reasoning and tool calls and
builds grammars; this engine only sends the rendered prompt to the upstream's /v1/completions
(streaming, with usage) and turns the chunks into `TextEvent`s and a `FinishEvent`. What kind of
server the upstream is (hermesd, llama-server, vLLM, SGLang) is detected once at start-up
(runtime/engine/upstream_dialect.py) and decides how grammars, sampling fields and adapters are
spelled.

Failures never hang a client: connecting has its own timeout, and so has every wait for the next
bytes. An upstream that cannot be reached (or drops a stream) makes `ready()` false with the reason,
so /health answers 503; `ready()` then probes the upstream's /health now and then (from the event
loop, never blocking it) and turns true again once it answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from hermesd.models.catalog import load_catalog
from hermesd.runtime.engine.protocol import (
    EngineEvent,
    EngineStats,
    FinishEvent,
    FinishReason,
    GenerationRequest,
    ModelInfo,
    TextEvent,
    Usage,
)
from hermesd.runtime.engine.text_stream import ReasoningTracker, TextAssembler
from hermesd.runtime.engine.upstream_dialect import (
    Dialect,
    UpstreamUnsupported,
    context_length,
    detect_kind,
    usage_numbers,
)
from hermesd.runtime.errors import (
    AdapterError,
    AdapterNotFound,
    ContextLengthExceeded,
    EngineShuttingDown,
    UpstreamError,
)

log = logging.getLogger(__name__)
ERROR_BODY_LIMIT = 64 << 10  # bytes of an upstream error body worth reading
# the body fields that carry a grammar, in any dialect (runtime/engine/upstream_dialect.py)
GRAMMAR_KEYS = ("grammar", "grammar_lazy", "grammar_triggers", "structured_outputs", "guided_grammar", "ebnf")


@dataclass(frozen=True)
class UpstreamConfig:
    url: str  # the upstream's base URL, with or without /v1
    api_key: str | None = None
    model: str | None = None  # the upstream's model id; default: the first it lists
    connect_timeout: float = 10.0
    read_timeout: float = 300.0  # the longest wait for the next bytes (the first token included)
    probe_interval: float = 2.0  # while unreachable: how often ready() asks the upstream's /health
    # where the upstream's hosts find hermesd's adapter store (None: the same path as here)
    adapter_root: str | None = None
    adapter_store: str | None = None  # this machine's adapter store (<state_dir>/adapters)


def base_url(url: str) -> str:
    """The server root: hermesd calls /v1/..., /props, /health, /tokenize below it."""
    url = url.rstrip("/")
    return url.removesuffix("/v1")


class UpstreamEngine:
    """Implements `Engine` by forwarding rendered prompts to an OpenAI-compatible server."""

    def __init__(self, config: UpstreamConfig, dialect: Dialect, info: ModelInfo, adds_bos: bool) -> None:
        self.config = config
        self.dialect = dialect
        self._info = info
        self.model_id = info.name
        self.adds_bos = adds_bos
        self._headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._timeout = httpx.Timeout(config.read_timeout, connect=config.connect_timeout)
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._problem: str | None = None
        self._probe: asyncio.Task[None] | None = None
        self._last_probe = 0.0
        self._accepting = True
        self._streams: set[UpstreamStream] = set()
        self._adapters: dict[str, str] = {}  # hermesd name -> the upstream's lora_name
        self._prompt_tokens = 0
        self._cached_tokens = 0
        self._generated = 0
        self._finished: dict[str, int] = {}

    # -- start-up
    @classmethod
    def connect(cls, config: UpstreamConfig) -> UpstreamEngine:
        """Ask the upstream what it is and serves. UpstreamError (one line) when it cannot be
        reached, refuses the key, or serves nothing."""
        root = base_url(config.url)
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        timeout = httpx.Timeout(config.connect_timeout * 3, connect=config.connect_timeout)
        with httpx.Client(base_url=root, headers=headers, timeout=timeout) as client:
            models = _get_json(client, "/v1/models", required=True)
            props = _get_json(client, "/props")
            version = _get_json(client, "/version")
            kind = detect_kind(models, props, version)
            dialect = Dialect(kind, str((version or {}).get("version", "")))
            listed = _model_entries(models)
            model = _choose_model(config.model, listed, root)
            show = _post_json(client, "/api/show", {"model": model["id"]}) if kind == "hermesd" else None
            info = _model_info(root, model, props, show)
            adds_bos = False
            if dialect.has_tokenize and info.bos_token:
                tokens = _tokenize_sync(client, dialect, info.name, "")
                adds_bos = tokens is not None and len(tokens) > 0
        log.info(
            "upstream %s: %s %s, model %s, %d tokens per sequence",
            root,
            kind,
            dialect.version,
            info.name,
            info.context_length,
        )
        return cls(config, dialect, info, adds_bos)

    # -- Engine
    @property
    def info(self) -> ModelInfo:
        return self._info

    def ready(self) -> bool:
        if self._problem is None:
            return True
        self._maybe_probe()
        return False

    def unready_reason(self) -> str | None:
        """Why /health answers 503 (None when it need not)."""
        return self._problem

    def stats(self) -> EngineStats:
        return EngineStats(
            running=len(self._streams),
            slots=self._info.parallel,
            prompt_tokens=self._prompt_tokens,
            cached_prompt_tokens=self._cached_tokens,
            generated_tokens=self._generated,
            finished=dict(self._finished),
        )

    def count_tokens(self, prompt: str) -> int:
        """The upstream's count: its /tokenize, else the usage of a one-token completion."""
        root = base_url(self.config.url)
        with httpx.Client(base_url=root, headers=self._headers, timeout=self._timeout) as client:
            try:
                if self.dialect.has_tokenize:
                    tokens = _tokenize_sync(client, self.dialect, self.model_id, self._outgoing(prompt))
                    if tokens is not None:
                        return len(tokens)
                body = {"model": self.model_id, "prompt": self._outgoing(prompt), "max_tokens": 1}
                response = client.post("/v1/completions", json=body)
            except httpx.TimeoutException as exc:
                raise _timeout_error(root, exc) from None
            except httpx.HTTPError as exc:
                raise _unreachable(root, exc) from None
        if response.status_code != 200:
            raise _response_error(root, response)
        return usage_numbers(response.json().get("usage") or {})[0]

    async def submit(self, request: GenerationRequest) -> UpstreamStream:
        if not self._accepting:
            raise EngineShuttingDown("the server is shutting down")
        client = self._async_client()
        prompt = self._outgoing(request.prompt)
        model = self._upstream_model(request)
        reasoning = request.reasoning
        budget = reasoning.budget if reasoning.thinking or reasoning.starts_open else None
        body: dict[str, Any] = {
            "model": model,
            "prompt": prompt,
            # with a reasoning budget, the first part ends where the budget would (the stream then
            # closes the reasoning and continues): exact however the upstream groups tokens in chunks
            "max_tokens": request.max_tokens if budget is None else max(1, min(budget, request.max_tokens)),
            "stream": True,
            "stream_options": {"include_usage": True},
            **self.dialect.sampling_fields(request.sampling),
            **self.dialect.grammar_fields(request),
        }
        if request.stop and not self.dialect.stops_here:
            body["stop"] = list(request.stop)
        if request.ignore_eos:
            body["ignore_eos"] = True
        prompt_tokens = 0
        if self.dialect.has_tokenize:
            prompt_tokens = await self._count(client, prompt)
            if prompt_tokens >= self._info.context_length:
                raise ContextLengthExceeded(prompt_tokens, request.max_tokens, self._info.context_length)
        response = await self._open(client, body)
        stream = UpstreamStream(self, request, body, response, prompt_tokens)
        try:
            await stream.prefetch()  # the first token, or the error that came instead, before any byte
        except BaseException:
            await stream.aclose()
            raise
        return stream

    def load_adapter(self, name: str, path: str) -> None:
        """Load the adapter's PEFT folder (beside its GGUF in the store) into the upstream."""
        if not self.dialect.loads_adapters:
            raise AdapterError(
                f"the upstream ({self.dialect.kind}) cannot load adapters at run time; serve the adapter "
                "from a vLLM upstream (--enable-lora, VLLM_ALLOW_RUNTIME_LORA_UPDATING=True), or merge it"
            )
        folder = self._upstream_adapter_dir(path)
        body = {"lora_name": _lora_name(name), "lora_path": folder}
        self._admin_post("/v1/load_lora_adapter", body, f"load adapter '{name}'")
        self._adapters[name] = body["lora_name"]

    def unload_adapter(self, name: str) -> None:
        lora = self._adapters.get(name)
        if lora is None:
            raise AdapterNotFound(f"adapter '{name}' is not loaded")
        if any(s.adapter == name for s in self._streams):
            raise AdapterError(f"adapter '{name}' is serving requests; try again when they finish")
        self._admin_post("/v1/unload_lora_adapter", {"lora_name": lora}, f"unload adapter '{name}'")
        del self._adapters[name]

    async def drain(self, timeout: float) -> None:
        self._accepting = False
        deadline = time.monotonic() + timeout
        while self._streams and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        left = list(self._streams)
        for stream in left:
            stream.abort("the server is shutting down and the drain timeout has passed")
        if left:
            log.warning("drain timeout (%.0f s) passed: ended %d unfinished requests", timeout, len(left))

    def close(self) -> None:
        """Called from a worker thread while the event loop still runs: close the client there."""
        client, loop = self._client, self._loop
        self._client = None
        if client is None or loop is None or loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=5)
        except Exception as exc:  # closing must never stop a shutdown
            log.debug("closing the upstream client: %s", exc)

    # -- internals
    def _outgoing(self, prompt: str) -> str:
        """The prompt as sent: without its BOS text when the upstream adds a BOS itself (hermesd's
        renderer writes it for llama.cpp, which adds none when the text starts with one)."""
        bos = self._info.bos_token
        if self.adds_bos and bos and prompt.startswith(bos):
            return prompt[len(bos) :]
        return prompt

    def _upstream_model(self, request: GenerationRequest) -> str:
        if not request.adapters:
            return self.model_id
        if len(request.adapters) > 1 or request.adapters[0][1] != 1.0:
            raise UpstreamUnsupported("the upstream applies one adapter per request, at scale 1")
        name = request.adapters[0][0]
        lora = self._adapters.get(name)
        if lora is None:
            raise AdapterNotFound(f"adapter '{name}' is not loaded")
        return lora

    def _async_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._loop = asyncio.get_running_loop()
            self._client = httpx.AsyncClient(
                base_url=base_url(self.config.url),
                headers=self._headers,
                timeout=self._timeout,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            )
        return self._client

    async def _count(self, client: httpx.AsyncClient, prompt: str) -> int:
        body = self.dialect.tokenize_body(self.model_id, prompt)
        try:
            response = await client.post("/tokenize", json=body)
        except httpx.TimeoutException as exc:
            raise _timeout_error(self._root, exc) from None
        except httpx.HTTPError as exc:
            self.mark_unreachable(str(_unreachable(self._root, exc)))
            raise _unreachable(self._root, exc) from None
        if response.status_code != 200:
            raise _response_error(self._root, response)
        return len(_tokens(response.json()))

    async def _open(self, client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
        request = client.build_request("POST", "/v1/completions", json=body)
        try:
            response = await client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise _timeout_error(self._root, exc) from None
        except httpx.HTTPError as exc:
            error = _unreachable(self._root, exc)
            self.mark_unreachable(str(error))
            raise error from None
        if response.status_code != 200:
            try:
                content = await _read_limited(response)
            finally:
                await response.aclose()
            raise _status_error(self._root, response.status_code, content, response.headers)
        self.mark_reachable()
        return response

    @property
    def _root(self) -> str:
        return base_url(self.config.url)

    def mark_unreachable(self, reason: str) -> None:
        if self._problem is None:
            log.warning("upstream unavailable: %s", reason)
        self._problem = reason
        self._last_probe = time.monotonic()

    def mark_reachable(self) -> None:
        if self._problem is not None:
            log.info("upstream %s is back", self._root)
        self._problem = None

    def _maybe_probe(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._probe is not None and not self._probe.done():
            return
        if time.monotonic() - self._last_probe < self.config.probe_interval:
            return
        self._last_probe = time.monotonic()
        self._probe = asyncio.get_running_loop().create_task(self._probe_once())

    async def _probe_once(self) -> None:
        path = "/v1/models" if self.dialect.kind == "openai" else "/health"
        try:
            response = await self._async_client().get(path, timeout=self.config.connect_timeout)
        except httpx.HTTPError as exc:
            self._problem = str(_unreachable(self._root, exc))
            return
        if response.status_code == 200:
            self.mark_reachable()
        else:
            self._problem = f"the upstream {self._root} answers /health with HTTP {response.status_code}"

    def _admin_post(self, path: str, body: dict[str, Any], what: str) -> None:
        try:
            with httpx.Client(base_url=self._root, headers=self._headers, timeout=self._timeout) as client:
                response = client.post(path, json=body)
        except httpx.HTTPError as exc:
            raise AdapterError(f"{what}: the upstream {self._root} did not answer: {exc}") from None
        if response.status_code != 200:
            message = _error_message(response.content[:ERROR_BODY_LIMIT]) or response.reason_phrase
            raise AdapterError(f"{what}: the upstream answered HTTP {response.status_code}: {message}")

    def _upstream_adapter_dir(self, path: str) -> str:
        """The adapter's folder as the upstream sees it: `<store>/<name>/` (its PEFT files are there,
        beside adapter.gguf), under --upstream-adapter-root when the upstream mounts the store
        elsewhere."""
        from pathlib import Path

        folder = Path(path).parent
        if not (folder / "adapter_config.json").is_file():
            raise AdapterError(
                f"{folder}: no PEFT adapter (adapter_config.json) beside the GGUF; an upstream loads "
                "PEFT adapters: register one trained by `hermesd tune`, which keeps both"
            )
        root, store = self.config.adapter_root, self.config.adapter_store
        if root and store:
            try:
                return str(Path(root) / folder.resolve().relative_to(Path(store).resolve()))
            except ValueError:
                pass
        return str(folder)


class UpstreamStream:
    """The events of one upstream completion. Closing it closes the connection, which makes
    llama-server, vLLM, SGLang and hermesd abort the generation."""

    def __init__(
        self,
        engine: UpstreamEngine,
        request: GenerationRequest,
        body: dict[str, Any],
        response: httpx.Response,
        prompt_tokens: int,
    ) -> None:
        self._engine = engine
        self._request = request
        self._body = body
        self._response = response
        self.prompt_tokens = prompt_tokens
        self.adapter = request.adapters[0][0] if request.adapters else None
        self._tracker = ReasoningTracker(request.reasoning)
        stops_here = engine.dialect.stops_here and bool(request.stop)
        self._assembler = TextAssembler(stops=request.stop) if stops_here else None
        self._chunks = 0
        self._events = self._read()
        self._first: EngineEvent | None = None
        self._aborted: str | None = None
        self._closed = False
        self._finished = False
        self.error_status = 502  # the HTTP status of an error that ends the stream before any text
        engine._streams.add(self)

    async def prefetch(self) -> None:
        """Wait for the first event. An error before any text raises with its real status (504 for a
        timeout, 503 for an upstream that went away), since nothing has been sent to the client yet."""
        first = await anext(self._events)
        if isinstance(first, FinishEvent) and first.reason == "error":
            code = {504: "upstream_timeout", 503: "upstream_unavailable"}.get(
                self.error_status, "upstream_error"
            )
            raise UpstreamError(first.error or "the upstream failed", self.error_status, code=code)
        self._first = first

    def __aiter__(self) -> AsyncIterator[EngineEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[EngineEvent]:
        try:
            if self._first is not None:
                first, self._first = self._first, None
                yield first
                if isinstance(first, FinishEvent):
                    return
            async for event in self._events:
                yield event
        finally:
            await self.aclose()

    def abort(self, reason: str) -> None:
        """End this stream with an error event (the drain timeout passed)."""
        self._aborted = reason
        asyncio.get_running_loop().create_task(self._response.aclose())

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._engine._streams.discard(self)
        if not self._finished:
            finished = self._engine._finished
            finished["cancelled"] = finished.get("cancelled", 0) + 1
        await self._response.aclose()
        await self._events.aclose()

    async def _read(self) -> AsyncGenerator[EngineEvent, None]:
        engine = self._engine
        finish: str | None = None
        usage: Mapping[str, Any] = {}
        error: str | None = None
        written: list[str] = []  # the text so far, for a continuation
        first: tuple[int, int] | None = None  # (prompt, completion) tokens of a budgeted first part
        reasoning_tokens: int | None = None
        assembler = self._assembler
        try:
            while True:
                async for data in _sse_data(self._response):
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if not isinstance(chunk, dict):
                        continue
                    if "error" in chunk:
                        error = f"the upstream failed: {_message_of(chunk['error'])}"
                        break
                    if isinstance(chunk.get("usage"), dict):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or ():
                        if not isinstance(choice, dict):
                            continue
                        text = choice.get("text") or ""
                        if not isinstance(text, str):
                            raise ValueError(f"a completion chunk whose text is {type(text).__name__}")
                        if text:
                            self._chunks += 1
                            self._tracker.push(text)
                            written.append(text)
                            out = assembler.push(text.encode("utf-8")) if assembler is not None else text
                            if out:
                                yield TextEvent(out)
                        if choice.get("finish_reason"):
                            finish = str(choice["finish_reason"])
                    if assembler is not None and assembler.stopped:
                        finish = "stop"  # closing the stream (aclose) makes the upstream stop too
                        break
                if assembler is not None and not assembler.stopped and finish is not None:
                    rest = assembler.flush()
                    if rest:
                        yield TextEvent(rest)
                if first is not None or error is not None or not self._budgeted or finish != "length":
                    break
                # the first part was as long as the reasoning budget (see UpstreamEngine.submit)
                prompt, completion, _ = usage_numbers(usage)
                first = (prompt, completion or self._chunks)
                left = self._request.max_tokens - first[1]
                if left <= 0:
                    break
                close = ""
                if self._tracker.in_reasoning:
                    # the budget ran out inside the reasoning: write the close tag as the model would
                    # have (as hermesd's own engine does) and let the upstream answer from there
                    close = self._tracker.close()
                    written.append(close)
                    reasoning_tokens = first[1]
                    yield TextEvent(close)
                elif self._request.grammar is not None and self._request.grammar_trigger is not None:
                    raise UpstreamUnsupported(
                        "the answer began within the reasoning budget's first part, and a grammar "
                        "cannot be resumed in the middle of it through an upstream"
                    )
                await self._response.aclose()
                finish, usage = None, {}
                body = self._continuation(written, left, after_close=bool(close))
                self._response = await engine._open(engine._async_client(), body)
        except UpstreamError as exc:  # the continuation could not be opened
            error = str(exc)
            self.error_status = exc.status
        except httpx.TimeoutException:
            error = f"the upstream sent nothing for {engine.config.read_timeout:.0f} s"
            self.error_status = 504
        except ValueError as exc:  # not JSON, or not a completion chunk: the upstream is still there
            error = f"the upstream {engine._root} sent a malformed chunk: {exc}"
        except (httpx.HTTPError, httpx.StreamError) as exc:
            if self._aborted is None:
                error = f"the upstream {engine._root} broke off the stream: {exc or type(exc).__name__}"
                engine.mark_unreachable(error)
                self.error_status = 503
        if self._aborted is not None:
            error = self._aborted
        elif error is None and finish is None:
            error = f"the upstream {engine._root} closed the stream before it finished"
            engine.mark_unreachable(error)
            self.error_status = 503
        prompt, completion, cached = usage_numbers(usage)
        if first is not None:
            # the continuation's prompt is the first part's prompt, its output and the close tag
            # hermesd wrote, which counts as output (as in hermesd's own engine)
            written_by_us = max(0, prompt - first[0] - first[1]) if prompt and first[0] else 0
            prompt = first[0]
            completion = first[1] + written_by_us + completion
        stopped_here = assembler.matched if assembler is not None and assembler.stopped else None
        if stopped_here is not None:  # the upstream never finished: hermesd counted its tokens
            completion = self._chunks  # llama-server sends one token per chunk
        elif engine.dialect.stops_here and finish == "stop" and completion > 0:
            completion -= 1  # the end-of-generation token, which hermesd does not count as output
        usage_out = Usage(
            prompt_tokens=prompt or self.prompt_tokens,
            completion_tokens=completion or self._chunks,
            cached_tokens=cached,
            reasoning_tokens=self._tracker.tokens if reasoning_tokens is None else reasoning_tokens,
        )
        reason: FinishReason = "error" if error else ("length" if finish == "length" else "stop")
        engine._prompt_tokens += usage_out.prompt_tokens
        engine._cached_tokens += usage_out.cached_tokens
        engine._generated += usage_out.completion_tokens
        engine._finished[reason] = engine._finished.get(reason, 0) + 1
        self._finished = True
        yield FinishEvent(reason, usage_out, error, stopped_here if reason == "stop" else None)

    @property
    def _budgeted(self) -> bool:
        return self._body["max_tokens"] < self._request.max_tokens

    def _continuation(self, written: list[str], max_tokens: int, *, after_close: bool) -> dict[str, Any]:
        """The request that continues this one after the text `written` so far: after the close tag
        hermesd wrote, the grammar applies from the start; else it is the request's own."""
        body = {k: v for k, v in self._body.items() if k not in GRAMMAR_KEYS}
        body["prompt"] = self._body["prompt"] + "".join(written)
        body["max_tokens"] = max_tokens
        dialect = self._engine.dialect
        body.update(
            dialect.continuation_fields(self._request)
            if after_close
            else dialect.grammar_fields(self._request)
        )
        return body


# -- HTTP helpers ------------------------------------------------------------------------------------


async def _sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The `data:` payloads of a server-sent event stream (comments and other fields skipped)."""
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            yield line[5:].strip()
        elif line.startswith("error:"):  # llama-server's mid-stream error line
            yield json.dumps({"error": _error_json(line[6:].strip())})


def _error_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


async def _read_limited(response: httpx.Response) -> bytes:
    out = b""
    async for part in response.aiter_bytes():
        out += part
        if len(out) >= ERROR_BODY_LIMIT:
            break
    return out[:ERROR_BODY_LIMIT]


def _message_of(error: Any) -> str:
    if isinstance(error, dict):
        inner = error.get("error", error)
        if isinstance(inner, dict):
            return str(inner.get("message") or inner)
        return str(inner)
    return str(error)


def _error_message(content: bytes) -> str:
    try:
        body = json.loads(content)
    except ValueError:
        return content.decode("utf-8", errors="replace").strip()[:500]
    if isinstance(body, dict):
        if "error" in body:
            return _message_of(body["error"])
        if "message" in body:  # vLLM's ErrorResponse, older versions
            return str(body["message"])
        if "detail" in body:  # FastAPI's default
            return str(body["detail"])
    return str(body)[:500]


def _error_fields(content: bytes) -> tuple[str | None, str | None]:
    """(param, code) of an OpenAI-shaped error body."""
    try:
        body = json.loads(content)
    except ValueError:
        return None, None
    inner = body.get("error") if isinstance(body, dict) else None
    if not isinstance(inner, dict):
        return None, None
    param, code = inner.get("param"), inner.get("code")
    return (param if isinstance(param, str) else None), (code if isinstance(code, str) else None)


def _status_error(root: str, status: int, content: bytes, headers: Mapping[str, str]) -> UpstreamError:
    """An upstream's HTTP error as the error hermesd's client gets: the request's own faults keep
    their status and message; the upstream's faults (a refused key, a crash) are a bad gateway."""
    message = _error_message(content) or f"HTTP {status}"
    if status in (400, 413, 422):
        param, code = _error_fields(content)
        return UpstreamError(message, 400, type="invalid_request_error", param=param, code=code)
    retry = headers.get("retry-after")
    retry_after = int(retry) if retry and retry.isdigit() else None
    if status == 429:
        return UpstreamError(
            f"the upstream is rate limiting: {message}",
            429,
            type="rate_limit_error",
            code="rate_limit_exceeded",
            retry_after=retry_after or 1,
        )
    if status == 503:
        return UpstreamError(
            f"the upstream is busy or unavailable: {message}",
            503,
            code="upstream_unavailable",
            retry_after=retry_after or 1,
        )
    if status in (408, 504):
        return UpstreamError(f"the upstream timed out: {message}", 504, code="upstream_timeout")
    if status in (401, 403):
        return UpstreamError(
            f"the upstream {root} refused hermesd's credentials (HTTP {status}): check "
            "--upstream-key-file / HERMESD_UPSTREAM_KEY",
            502,
            code="upstream_auth",
        )
    return UpstreamError(f"the upstream {root} answered HTTP {status}: {message}", 502)


def _response_error(root: str, response: httpx.Response) -> UpstreamError:
    return _status_error(root, response.status_code, response.content[:ERROR_BODY_LIMIT], response.headers)


def _unreachable(root: str, exc: BaseException) -> UpstreamError:
    detail = str(exc) or type(exc).__name__
    return UpstreamError(
        f"cannot reach the upstream {root}: {detail}", 503, code="upstream_unavailable", retry_after=5
    )


def _timeout_error(root: str, exc: httpx.TimeoutException) -> UpstreamError:
    kind = "connecting to" if isinstance(exc, httpx.ConnectTimeout) else "waiting for"
    return UpstreamError(f"timed out {kind} the upstream {root}", 504, code="upstream_timeout")


def _tokens(body: Any) -> list[Any]:
    tokens = body.get("tokens") if isinstance(body, dict) else None
    if not isinstance(tokens, list):
        raise UpstreamError("the upstream's /tokenize answered without a token list", 502)
    return tokens


def _tokenize_sync(client: httpx.Client, dialect: Dialect, model: str, text: str) -> list[Any] | None:
    """The upstream's tokens for `text`; None when its /tokenize does not answer with them."""
    try:
        response = client.post("/tokenize", json=dialect.tokenize_body(model, text))
        return _tokens(response.json()) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, UpstreamError):
        return None


def _get_json(client: httpx.Client, path: str, *, required: bool = False) -> dict[str, Any] | None:
    root = str(client.base_url).rstrip("/")
    try:
        response = client.get(path)
    except httpx.TimeoutException as exc:
        if required:
            raise _timeout_error(root, exc) from None
        return None
    except httpx.HTTPError as exc:
        if required:
            raise _unreachable(root, exc) from None
        return None
    if response.status_code != 200:
        if required:
            raise _response_error(root, response)
        return None
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        if required:
            raise UpstreamError(f"the upstream {root}{path} did not answer with a JSON object", 502)
        return None
    return body


def _post_json(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
    try:
        response = client.post(path, json=body)
        out = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return out if isinstance(out, dict) else None


def _model_entries(models: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    data = (models or {}).get("data")
    return (
        [m for m in data if isinstance(m, Mapping) and isinstance(m.get("id"), str)]
        if isinstance(data, list)
        else []
    )


def _choose_model(wanted: str | None, listed: list[Mapping[str, Any]], root: str) -> Mapping[str, Any]:
    if not listed:
        raise UpstreamError(f"the upstream {root} lists no model at /v1/models", 502)
    if wanted is None:
        # the base model, not an adapter (vLLM lists loaded LoRAs with a `parent`)
        bases = [m for m in listed if not m.get("parent") or m.get("parent") == m.get("id")]
        return (bases or listed)[0]
    for m in listed:
        if m.get("id") == wanted:
            return m
    names = ", ".join(str(m.get("id")) for m in listed)
    raise UpstreamError(f"--upstream-model {wanted!r}: the upstream {root} serves {names}", 502)


def _lora_name(name: str) -> str:
    return f"hermesd-{name}"


def _model_info(
    root: str,
    model: Mapping[str, Any],
    props: Mapping[str, Any] | None,
    show: Mapping[str, Any] | None,
) -> ModelInfo:
    """What the upstream says about its model; the catalog (by the model's name) fills the rest."""
    model_id = str(model["id"])
    props = props or {}
    meta: dict[str, str] = {}
    if show and isinstance(show.get("model_info"), Mapping):
        meta = {str(k): str(v) for k, v in show["model_info"].items()}
    arch = meta.get("general.architecture", "")
    variant = _catalog_variant(model_id)
    if variant is not None:
        arch = arch or variant.arch
        meta.setdefault("general.name", variant.name)
    meta.setdefault("general.name", model_id.rsplit("/", 1)[-1])
    if arch:
        meta["general.architecture"] = arch
    ctx = context_length(model, props)
    if ctx is None:
        ctx = variant.context_max if variant is not None else 0
    if not ctx:
        raise UpstreamError(
            f"the upstream {root} does not say its context length (max_model_len, /props n_ctx) "
            "and the model is not in the catalog",
            502,
        )
    train = _int(meta.get(f"{arch}.context_length")) or _int(props.get("n_ctx_train")) or ctx
    template = props.get("chat_template") or (show or {}).get("template") or None
    slots = props.get("total_slots")
    return ModelInfo(
        path=model_id,
        architecture=arch,
        name=model_id,
        context_length=ctx,
        train_context_length=train,
        parallel=slots if isinstance(slots, int) and slots > 0 else 0,
        bos_token=str(props.get("bos_token") or ""),
        eos_token=str(props.get("eos_token") or ""),
        chat_template=str(template) if template else None,
        metadata=meta,
        upstream=root,
    )


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _catalog_variant(model_id: str) -> Any:
    """The catalog variant a model id names (`NousResearch/Hermes-4-405B-FP8` -> hermes-4-405b)."""
    try:
        catalog = load_catalog()
    except Exception as exc:  # a broken catalog overlay must not stop serving
        log.warning("catalog unavailable for naming the upstream model: %s", exc)
        return None
    name = model_id.rsplit("/", 1)[-1]
    parts = name.split("-")
    for end in range(len(parts), 0, -1):
        found = catalog.variant("-".join(parts[:end]))
        if found is not None:
            return found
    return None
