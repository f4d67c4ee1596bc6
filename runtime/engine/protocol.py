"""The interface between the HTTP server and whatever runs the model.

The server only ever sees these types. The llama.cpp engine implements `Engine`; tests of the
serving layer use a fake. Keeping this small is what lets the scheduler inside the engine change
without touching the server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from hermesd.models.formats.reasoning import Reasoning

FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int | None = None


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    max_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    # Adapter names, in order, with their scales; () is the base model.
    adapters: tuple[tuple[str, float], ...] = ()
    # Think on/off, budget, tags, whether the prompt opened the reasoning (shared with the server).
    reasoning: Reasoning = field(default_factory=Reasoning)
    # A GBNF grammar constraining the output. With `grammar_trigger`, it is lazy: it applies from
    # the first occurrence of that text on (`reasoning.constraint_trigger`: the answer after reasoning).
    grammar: str | None = None
    grammar_trigger: str | None = None
    # Keep generating past end-of-generation tokens (llama-server's ignore_eos; for benchmarks).
    ignore_eos: bool = False
    request_id: str = ""


@dataclass(frozen=True)
class TextEvent:
    """Newly generated text (already UTF-8 complete, stop strings removed)."""

    text: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    # speculative decoding: drafted tokens the model kept and those it did not (OpenAI's names)
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0


@dataclass(frozen=True)
class FinishEvent:
    reason: FinishReason
    usage: Usage
    error: str | None = None
    stop_sequence: str | None = None  # the request's stop string that ended it ("stop" only)


EngineEvent = TextEvent | FinishEvent


@dataclass(frozen=True)
class DeviceUse:
    """What one device holds after the load, as llama.cpp reported it (runtime/engine/load_report.py)."""

    name: str  # "CPU", "CUDA0", ...
    kind: str  # "cpu" | "gpu"
    layers: int
    model_bytes: int = 0
    kv_bytes: int = 0
    compute_bytes: int = 0


@dataclass(frozen=True)
class ModelInfo:
    path: str
    architecture: str
    name: str
    context_length: int  # per sequence
    train_context_length: int
    parallel: int
    bos_token: str
    eos_token: str
    chat_template: str | None
    metadata: dict[str, str]
    backends: tuple[str, ...] = ()  # the llama.cpp build's backends ("CPU", "CUDA")
    devices: tuple[DeviceUse, ...] = ()  # layers and memory per device
    n_params: int = 0  # parameters in the model file (llama.cpp's llama_model_n_params)
    size_bytes: int = 0  # bytes of its tensors (llama_model_size)
    # the server that runs the model when it is not this process (`hermesd serve --upstream URL`);
    # `path` is then the upstream's model id, not a file
    upstream: str | None = None


@dataclass(frozen=True)
class EngineStats:
    """Counters since start, and what is running now (for /metrics and tests)."""

    running: int = 0
    waiting: int = 0
    slots: int = 0
    decode_steps: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    generated_tokens: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    # speculative decoding, by source of the drafts (runtime/engine/speculation.py)
    spec_drafted: dict[str, int] = field(default_factory=dict)
    spec_accepted: dict[str, int] = field(default_factory=dict)


class RequestStream(Protocol):
    """The events of one request. `aclose()` (or cancelling the consuming task and then closing)
    aborts generation within one decode step."""

    prompt_tokens: int

    def __aiter__(self) -> AsyncIterator[EngineEvent]: ...

    async def aclose(self) -> None: ...


class Engine(Protocol):
    """What the server needs from a model runner."""

    @property
    def info(self) -> ModelInfo: ...

    def ready(self) -> bool: ...

    def stats(self) -> EngineStats: ...

    def count_tokens(self, prompt: str) -> int:
        """The prompt tokens `submit` counts for this prompt (its usage's `prompt_tokens`)."""
        ...

    async def submit(self, request: GenerationRequest) -> RequestStream:
        """Tokenize, check limits and queue one request. Raises ContextLengthExceeded,
        EngineOverloaded or EngineShuttingDown before anything is generated."""
        ...

    # Only the registry of loaded adapters (runtime/adapters.py) calls these; it is the list of what
    # is loaded, the engine keeps just the llama.cpp handles.
    def load_adapter(self, name: str, path: str) -> None: ...

    def unload_adapter(self, name: str) -> None: ...

    async def drain(self, timeout: float) -> None: ...

    def close(self) -> None: ...
