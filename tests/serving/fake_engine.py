"""A scripted Engine for tests of the HTTP layer: it 'generates' a fixed text in small pieces.

It records every request it was given, so tests can check the prompt the server rendered. It is
never the only test of a feature: tests/e2e runs the same behaviours on real llama.cpp models.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from hermesd.runtime.engine.protocol import (
    EngineEvent,
    EngineStats,
    FinishEvent,
    GenerationRequest,
    ModelInfo,
    TextEvent,
    Usage,
)
from hermesd.runtime.errors import AdapterError, AdapterNotFound, ContextLengthExceeded


@dataclass
class FakeStream:
    events: list[EngineEvent]
    delay: float
    prompt_tokens: int
    closed: bool = False

    def __aiter__(self) -> AsyncIterator[EngineEvent]:
        return self._run()

    async def _run(self) -> AsyncIterator[EngineEvent]:
        for event in self.events:
            if self.closed:
                return
            if self.delay:
                await asyncio.sleep(self.delay)
            yield event

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class FakeEngine:
    reply: str = "Hello there."
    chunk: int = 3
    delay: float = 0.0
    finish_reason: str = "stop"
    error: str | None = None
    context: int = 4096
    name: str = "Hermes 4 Tiny"
    architecture: str = "qwen3"
    path: str = "/models/fake-model.gguf"  # a real GGUF here gives the served model a base fingerprint
    requests: list[GenerationRequest] = field(default_factory=list)
    streams: list[FakeStream] = field(default_factory=list)
    loaded_adapters: dict[str, str] = field(default_factory=dict)  # name -> path, as the engine keeps them

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            path=self.path,
            architecture=self.architecture,
            name=self.name,
            context_length=self.context,
            train_context_length=self.context,
            parallel=1,
            bos_token="<|begin_of_text|>",
            eos_token="<|im_end|>",
            chat_template=None,
            metadata={"general.name": self.name, "general.architecture": self.architecture},
        )

    def ready(self) -> bool:
        return True

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def stats(self) -> EngineStats:
        return EngineStats(slots=1, generated_tokens=sum(len(s.events) - 1 for s in self.streams))

    async def submit(self, request: GenerationRequest) -> FakeStream:
        self.requests.append(request)
        prompt_tokens = self.count_tokens(request.prompt)
        if prompt_tokens >= self.context:
            raise ContextLengthExceeded(prompt_tokens, request.max_tokens, self.context)
        pieces = [self.reply[i : i + self.chunk] for i in range(0, len(self.reply), self.chunk)]
        pieces = pieces[: request.max_tokens]
        events: list[EngineEvent] = [TextEvent(p) for p in pieces]
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=len(pieces))
        if self.error:
            events.append(FinishEvent("error", usage, self.error))
        else:
            events.append(FinishEvent(self.finish_reason, usage))  # type: ignore[arg-type]
        stream = FakeStream(events, self.delay, prompt_tokens)
        self.streams.append(stream)
        return stream

    def load_adapter(self, name: str, path: str) -> None:
        if name in self.loaded_adapters:
            raise AdapterError(f"adapter '{name}' is already loaded")
        self.loaded_adapters[name] = path

    def unload_adapter(self, name: str) -> None:
        if self.loaded_adapters.pop(name, None) is None:
            raise AdapterNotFound(f"adapter '{name}' is not loaded")

    async def drain(self, timeout: float) -> None:
        return None

    def close(self) -> None:
        return None
