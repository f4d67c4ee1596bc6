"""What the app keeps on `app.state`, typed, so routes never reach for globals."""

from __future__ import annotations

from dataclasses import dataclass

from hermesd.runtime.engine.protocol import Engine
from hermesd.server.model_registry import ModelRegistry
from hermesd.server.serving_adapters import AdapterServing
from hermesd.server.serving_chat import ChatServing
from hermesd.server.serving_completions import CompletionServing
from hermesd.server.settings import Settings


@dataclass
class Serving:
    engine: Engine
    registry: ModelRegistry
    chat: ChatServing
    completions: CompletionServing
    adapters: AdapterServing


@dataclass
class AppState:
    settings: Settings
    serving: Serving | None = None
    load_error: str | None = None
    draining: bool = False
