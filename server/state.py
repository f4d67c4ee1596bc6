"""What the app keeps on `app.state`, typed, so routes never reach for globals."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property

from hermesd.runtime.engine.protocol import Engine
from hermesd.server.model_registry import ModelRegistry
from hermesd.server.serving_adapters import AdapterServing
from hermesd.server.serving_anthropic import AnthropicServing
from hermesd.server.serving_chat import ChatServing
from hermesd.server.serving_completions import CompletionServing
from hermesd.server.serving_ollama import OllamaServing
from hermesd.server.serving_responses import ResponsesServing
from hermesd.server.settings import Settings


@dataclass
class Serving:
    engine: Engine
    registry: ModelRegistry
    chat: ChatServing
    completions: CompletionServing
    adapters: AdapterServing

    @cached_property
    def anthropic(self) -> AnthropicServing:
        """The Messages API layer: chat's serving object under Anthropic's wire format."""
        return AnthropicServing(self.chat, self.engine)

    @cached_property
    def responses(self) -> ResponsesServing:
        """The Responses API layer, with its store of responses (kept as long as the app)."""
        return ResponsesServing(self.chat, self.chat.settings)

    @cached_property
    def ollama(self) -> OllamaServing:
        """Ollama's API layer: chat's serving object under Ollama's wire format."""
        return OllamaServing(self.chat, self.registry, self.engine)


@dataclass
class AppState:
    settings: Settings
    serving: Serving | None = None
    load_error: str | None = None
    draining: bool = False
    # when the app was made (the daemon's start, before the model loads): `hermesd ps` shows uptime
    started_at: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)

    def uptime(self) -> float:
        return time.monotonic() - self.started_monotonic
