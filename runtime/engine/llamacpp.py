"""The llama.cpp engine: a loaded model, one batching scheduler, and the asyncio bridge."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from hermesd.models.gguf_info import gguf_info
from hermesd.runtime.engine.capabilities import probe_capabilities
from hermesd.runtime.engine.context_settings import ContextSettings
from hermesd.runtime.engine.draft_model import ModelDrafter
from hermesd.runtime.engine.llama_model import LlamaModel, LlamaModelConfig, capture_log
from hermesd.runtime.engine.load_report import describe, parse_load_log, planned_and_allocated
from hermesd.runtime.engine.protocol import (
    EngineEvent,
    EngineStats,
    FinishEvent,
    GenerationRequest,
    ModelInfo,
    TextEvent,
    Usage,
)
from hermesd.runtime.engine.scheduler import Scheduler, Sequence
from hermesd.runtime.engine.speculation import SpeculationSettings
from hermesd.runtime.errors import (
    AdapterError,
    AdapterNotFound,
    ContextLengthExceeded,
    DraftVocabMismatch,
    EngineShuttingDown,
    ModelLoadError,
)
from hermesd.runtime.rpc import WorkerLink

log = logging.getLogger(__name__)
INLINE_TOKENIZE_CHARS = 4096
FIRST_TOKEN_HANDOFF_S = 0.005


@dataclass(frozen=True)
class EngineConfig:
    model: LlamaModelConfig
    context: ContextSettings
    speculation: SpeculationSettings = field(default_factory=SpeculationSettings)
    # a small model sharing the vocabulary, drafting tokens for this one to verify (--draft-model)
    draft: LlamaModelConfig | None = None
    # llama.cpp RPC workers ("HOST:PORT"), registered in this order before the model loads: their
    # devices come first in llama.cpp's device list (tensor_split), then the local GPUs
    rpc_workers: tuple[str, ...] = ()


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class LlamaStream:
    """Events of one request, fed by the decode thread through the event loop."""

    def __init__(self, engine: LlamaCppEngine, seq: Sequence, queue: asyncio.Queue[EngineEvent]) -> None:
        self._engine = engine
        self._seq = seq
        self._queue = queue
        self._done = False
        self.prompt_tokens = len(seq.prompt)

    def __aiter__(self) -> AsyncIterator[EngineEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[EngineEvent]:
        queue = self._queue
        try:
            while not self._done:
                event = await queue.get()
                # When the consumer fell behind the decoder, hand over all text that is already
                # here as one event: the HTTP layer then pays its per-chunk cost once, not per token.
                if isinstance(event, TextEvent) and not queue.empty():
                    parts, follow = [event.text], None
                    while not queue.empty():
                        nxt = queue.get_nowait()
                        if not isinstance(nxt, TextEvent):
                            follow = nxt
                            break
                        parts.append(nxt.text)
                    yield TextEvent("".join(parts))
                    self._taken()
                    if follow is None:
                        continue
                    event = follow
                if isinstance(event, FinishEvent):
                    self._done = True
                yield event
                self._taken()
        finally:
            self._taken()
            if not self._done:
                self._engine.scheduler.cancel(self._seq)

    def _taken(self) -> None:
        """The consumer is back for more, so what it got is out: the decoder need not wait."""
        if not self._seq.first_taken.is_set():
            self._seq.first_taken.set()

    def fail(self, reason: str) -> None:
        """Event loop: end this stream with an error now (its worker is lost)."""
        if not self._done:
            self._queue.put_nowait(FinishEvent("error", Usage(self.prompt_tokens, 0), reason))

    async def aclose(self) -> None:
        self._taken()
        if not self._done:
            self._done = True
            self._engine.scheduler.cancel(self._seq)


class LlamaCppEngine:
    """Implements `Engine` on llama-cpp-python's low-level API."""

    def __init__(self, config: EngineConfig, on_worker_lost: Callable[[str], None] | None = None) -> None:
        t0 = time.monotonic()
        self._outbox: list[tuple[asyncio.Queue[EngineEvent], EngineEvent]] = []
        self._wake_pending = False
        self.config = config
        # a lost RPC worker ends every stream with an error and stops new requests; then
        # `on_worker_lost` (the daemon) decides what to do (cli/serve.py exits so systemd restarts it)
        self.lost: str | None = None
        self._live: weakref.WeakSet[LlamaStream] = weakref.WeakSet()
        self._on_worker_lost = on_worker_lost
        self.workers = WorkerLink(config.rpc_workers, self._worker_lost) if config.rpc_workers else None
        caps = probe_capabilities()
        with capture_log() as lines:
            self.model = LlamaModel(config.model)
        self.drafter: ModelDrafter | None = None
        try:
            self.drafter = self._load_drafter()
            with capture_log() as context_lines:
                self.scheduler = Scheduler(
                    self.model,
                    config.context,
                    flush=self._flush,
                    speculation=config.speculation,
                    drafter=self.drafter,
                )
            lines += context_lines
        except Exception:
            if self.drafter is not None:
                self.drafter.close()
            self.model.close()
            raise
        names = [d.name for d in caps.devices]
        self.load_report = parse_load_log(lines, names)
        self.gpu_names = tuple(d.name for d in caps.gpu_devices)
        kinds = {d.name: d.kind for d in caps.devices}
        self._info = replace(
            self._build_info(), backends=caps.backends, devices=self.load_report.devices(kinds)
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        log.info(
            "model %s loaded in %.1f s (%d slots x %d tokens)",
            config.model.path,
            time.monotonic() - t0,
            config.context.parallel,
            self.scheduler.n_ctx_seq,
        )
        log.info("%s", describe(self.load_report, caps.backends))
        variant = gguf_info(self.model.summary).as_variant()
        log.info("%s", planned_and_allocated(self.load_report, variant, config.context))
        if self.workers is not None:
            self.workers.watch()

    def _load_drafter(self) -> ModelDrafter | None:
        """The draft model, or None. One that cannot be loaded leaves the engine serving without
        it (the log says why); one with another vocabulary is refused: that is a wrong setting."""
        if self.config.draft is None:
            return None
        path = self.config.draft.path
        try:
            model = LlamaModel(self.config.draft)
        except ModelLoadError as exc:
            log.warning("serving without the draft model: %s", exc)
            return None
        try:
            drafter = ModelDrafter(model, self.model, self.config.context)
        except DraftVocabMismatch:
            model.close()
            raise
        except ModelLoadError as exc:
            model.close()
            log.warning("serving without the draft model: %s", exc)
            return None
        log.info("draft model %s loaded: speculative decoding drafts from it", path)
        return drafter

    def _build_info(self) -> ModelInfo:
        meta = self.model.metadata
        arch = meta.get("general.architecture", "")
        return ModelInfo(
            path=str(self.config.model.path),
            architecture=arch,
            name=meta.get("general.name", "") or meta.get("general.basename", ""),
            context_length=self.scheduler.n_ctx_seq,
            train_context_length=self.model.n_ctx_train,
            parallel=self.config.context.parallel,
            bos_token=self.model.token_text(self.model.bos_id),
            eos_token=self.model.token_text(self.model.eos_id),
            chat_template=self.model.chat_template(),
            metadata=meta,
            n_params=self.model.n_params,
            size_bytes=self.model.size_bytes,
        )

    def _flush(self, started: list[Sequence]) -> None:
        """Decode thread: wake the event loop for this step's events, unless a wake-up is already
        pending: the loop then takes these too, so a loop that falls behind a fast decoder gets
        fewer, larger hand-overs instead of a wake-up (a syscall on both sides) per step.

        For streams whose first token is in there, wait (at most FIRST_TOKEN_HANDOFF_S) until
        their consumers have it out. With a fast model the next steps would otherwise keep the
        GIL, llama.cpp's threads keep both cores busy, and the first chunk could wait for the
        whole reply; with a slow one the loop has long taken it when the wait begins."""
        if not self._outbox or self._loop is None:
            return
        if not self._wake_pending:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._deliver)
        deadline = time.monotonic() + FIRST_TOKEN_HANDOFF_S
        for seq in started:
            seq.first_taken.wait(max(0.0, deadline - time.monotonic()))

    def _deliver(self) -> None:
        """Event loop: hand everything decoded so far to the request streams. The flag is cleared
        before the outbox is read, so an event appended meanwhile either is read here or finds no
        wake-up pending and schedules its own."""
        self._wake_pending = False
        batch = self._outbox[:]
        del self._outbox[: len(batch)]
        for queue, event in batch:
            queue.put_nowait(event)

    @property
    def info(self) -> ModelInfo:
        return self._info

    def ready(self) -> bool:
        return self.lost is None and self.scheduler.thread.is_alive()

    def _worker_lost(self, reason: str) -> None:
        """Any thread (ggml's, stuck in a step that will never finish, or the watch): end every
        stream with an error event from the event loop, since the decode thread cannot."""
        self.lost = reason
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._end_streams, reason)
        if self._on_worker_lost is not None:
            self._on_worker_lost(reason)

    def _end_streams(self, reason: str) -> None:
        for stream in list(self._live):
            stream.fail(reason)

    def stats(self) -> EngineStats:
        return self.scheduler.stats()

    def count_tokens(self, prompt: str) -> int:
        return len(self.model.tokenize(prompt))

    async def submit(self, request: GenerationRequest) -> LlamaStream:
        # tokenizing a long prompt takes milliseconds: keep that off the event loop; a short one
        # takes microseconds, less than the hop to a worker thread would cost
        if len(request.prompt) > INLINE_TOKENIZE_CHARS:
            tokens = await asyncio.to_thread(self.model.tokenize, request.prompt)
        else:
            tokens = self.model.tokenize(request.prompt)
        if self.lost is not None:
            raise EngineShuttingDown(self.lost)
        context = self.scheduler.n_ctx_seq
        if len(tokens) >= context:
            raise ContextLengthExceeded(len(tokens), request.max_tokens, context)
        for name, _ in request.adapters:
            if self.model.get_adapter(name) is None:
                raise AdapterNotFound(f"adapter '{name}' is not loaded")
        self._loop = asyncio.get_running_loop()
        queue: asyncio.Queue[EngineEvent] = asyncio.Queue()
        outbox = self._outbox

        def sink(event: EngineEvent) -> None:  # decode thread; list.append is atomic
            outbox.append((queue, event))

        seq = Sequence(request=request, prompt=tokens, sink=sink, adapter_key=tuple(request.adapters))
        self.scheduler.submit(seq)
        stream = LlamaStream(self, seq, queue)
        self._live.add(stream)
        return stream

    # -- adapters
    # Both run on the decode thread (scheduler.call), between steps: requests in flight keep
    # streaming, and no decode ever sees an adapter appear or vanish mid-step.
    def load_adapter(self, name: str, path: str) -> None:
        self.scheduler.call(lambda: self.model.load_adapter(name, Path(path)))

    def unload_adapter(self, name: str) -> None:
        def unload() -> None:
            if self.model.get_adapter(name) is None:
                raise AdapterNotFound(f"adapter '{name}' is not loaded")
            if name in self.scheduler.adapters_in_use():
                raise AdapterError(f"adapter '{name}' is serving requests; try again when they finish")
            self.scheduler.forget_adapter(name)
            self.model.free_adapter(name)

        self.scheduler.call(unload)

    def adapter_metadata(self, name: str) -> dict[str, str]:
        adapter = self.model.get_adapter(name)
        if adapter is None:
            raise AdapterNotFound(f"adapter '{name}' is not loaded")
        return dict(adapter.metadata)

    # -- lifecycle
    async def drain(self, timeout: float) -> None:
        """Stop taking requests and wait up to `timeout` s for running ones to finish; then end
        the rest with an error event, so every stream still closes properly."""
        with self.scheduler.cv:
            self.scheduler.accepting = False
        deadline = time.monotonic() + timeout
        while self.scheduler.busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.scheduler.busy() and self.scheduler.thread.is_alive():
            n = await asyncio.to_thread(
                self.scheduler.call,
                lambda: self.scheduler.abort_all(
                    "the server is shutting down and the drain timeout has passed"
                ),
            )
            log.warning("drain timeout (%.0f s) passed: ended %s unfinished requests", timeout, n)

    def close(self) -> None:
        if self.workers is not None:
            self.workers.close()
        self.scheduler.stop()
        if self.drafter is not None:
            self.drafter.close()
        self.model.close()
