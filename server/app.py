"""The app factory. The engine is loaded in the lifespan, off the event loop, so /health answers
503 while a large model loads; serving objects are built once it is ready and kept on app.state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from hermesd.models.catalog import load_catalog
from hermesd.models.formats.detect import FORMAT_NAMES, detect_chat_format, is_hermes4_name
from hermesd.models.gguf_split import unsplit_name
from hermesd.models.store import AdapterStore
from hermesd.runtime.adapters import LoadedAdapters
from hermesd.runtime.engine.protocol import Engine, ModelInfo
from hermesd.server.errors import install_error_handlers
from hermesd.server.middleware import HermesdMiddleware
from hermesd.server.model_registry import ModelRegistry
from hermesd.server.routes import (
    adapters,
    anthropic,
    chat,
    completions,
    health,
    metrics,
    models,
    ollama,
    props,
    responses,
    status,
    ui,
)
from hermesd.server.serving_adapters import AdapterServing
from hermesd.server.serving_chat import ChatFormatInfo, ChatServing
from hermesd.server.serving_completions import CompletionServing
from hermesd.server.settings import Settings
from hermesd.server.state import AppState, Serving

log = logging.getLogger(__name__)

EngineFactory = Callable[[], Engine]


def catalog_id(info: ModelInfo) -> str | None:
    """The catalog id (e.g. `hermes-4-14b`) of a Hermes 4 file: by its file name in the catalog,
    else by architecture and layer count (a file the user quantized and named themselves)."""
    meta = info.metadata
    if not any(is_hermes4_name(meta.get(k, "")) for k in ("general.name", "general.basename")):
        return None
    try:
        catalog = load_catalog()
    except Exception as exc:  # a broken catalog overlay must not stop serving
        log.warning("catalog unavailable for naming the model: %s", exc)
        return None
    layers = meta.get(f"{info.architecture}.block_count", "")
    variant = catalog.variant_of_file(
        Path(info.path).name, info.architecture, int(layers) if layers.isdigit() else None
    )
    return variant.id if variant is not None else None


def model_ids(settings: Settings, info: ModelInfo) -> list[str]:
    """The ids clients may send: --served-model-name if given, else the catalog id of a Hermes 4
    file followed by the file's stem (either works)."""
    if settings.served_model_name:
        return list(settings.served_model_name)
    path = Path(info.path)
    # a split file is served under the name without its "-00001-of-00003" suffix
    stem = unsplit_name(path.name).removesuffix(".gguf")
    known = catalog_id(info)
    return [known, stem] if known and known != stem else [stem]


def chat_format_for(settings: Settings, info: ModelInfo) -> ChatFormatInfo:
    name = settings.chat_format or detect_chat_format(
        info.metadata | {"tokenizer.chat_template": info.chat_template or ""}
    )
    if name not in FORMAT_NAMES:
        raise ValueError(f"unknown chat format {name!r}")
    return ChatFormatInfo(
        name=name, bos_token=info.bos_token, eos_token=info.eos_token, template=info.chat_template
    )


def build_serving(settings: Settings, engine: Engine) -> Serving:
    info = engine.info
    registry = ModelRegistry(
        model_ids(settings, info), LoadedAdapters(engine), aliases=settings.model_aliases(), info=info
    )
    fmt = chat_format_for(settings, info)
    log.info("serving %s as %s with chat format %s", info.path, ", ".join(registry.base_ids), fmt.name)
    return Serving(
        engine=engine,
        registry=registry,
        chat=ChatServing(engine, registry, settings, fmt),
        completions=CompletionServing(engine, registry, settings),
        adapters=AdapterServing(registry, AdapterStore(settings.state_dir)),
    )


async def drain_app(state: AppState) -> None:
    """SIGTERM: stop taking requests (/health and new requests answer 503), let running streams
    finish within the drain timeout, then end the rest with a final error event."""
    if state.draining:
        return
    state.draining = True
    if state.serving is not None:
        await state.serving.engine.drain(state.settings.drain_timeout)


def create_app(
    settings: Settings,
    engine_factory: EngineFactory,
    on_ready: Callable[[], None] | None = None,
    on_load_error: Callable[[str], None] | None = None,
) -> FastAPI:
    state = AppState(settings=settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = asyncio.create_task(_load(state, engine_factory, on_ready, on_load_error))
        try:
            yield
        finally:
            loader.cancel()
            await drain_app(state)
            if state.serving is not None:
                await asyncio.to_thread(state.serving.engine.close)

    app = FastAPI(title="hermesd", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.hermesd = state
    install_error_handlers(app)
    for module in (health, metrics, models, chat, completions, adapters, props, anthropic, responses, ollama):
        app.include_router(module.router)
    app.include_router(status.router)
    if settings.ui:
        app.include_router(ui.router)
    if settings.cors_origin:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["authorization", "content-type", "x-api-key", "x-request-id"],
        )
    app.add_middleware(HermesdMiddleware, settings=settings)
    return app


async def _load(
    state: AppState,
    factory: EngineFactory,
    on_ready: Callable[[], None] | None,
    on_load_error: Callable[[str], None] | None,
) -> None:
    try:
        engine = await asyncio.to_thread(factory)
        state.serving = build_serving(state.settings, engine)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        state.load_error = str(exc)
        log.error("model failed to load: %s", exc)
        if on_load_error is not None:
            on_load_error(str(exc))
        return
    if on_ready is not None:
        on_ready()
