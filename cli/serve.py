"""`hermesd serve`: resolve settings, check the model file, start the HTTP server."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from hermesd.cli.logs import setup_logging
from hermesd.cli.settings_options import flags_from, settings_options
from hermesd.models.gguf_validate import GGUFSummary, GGUFValidationError, looks_like_gguf, validate_gguf
from hermesd.runtime import sdnotify
from hermesd.runtime.engine.context_settings import ContextSettings
from hermesd.runtime.engine.fallback import load_with_fallback
from hermesd.runtime.engine.llama_model import LlamaModelConfig
from hermesd.runtime.engine.llamacpp import EngineConfig, LlamaCppEngine, default_threads
from hermesd.runtime.engine.load_report import OffloadError, check_offload
from hermesd.runtime.engine.protocol import Engine
from hermesd.runtime.engine.speculation import SpeculationSettings
from hermesd.runtime.gpu_access import GpuAccess
from hermesd.runtime.hardware import Worker, extra_buffers_by_default, read_cpu_features
from hermesd.runtime.planner import engine_split
from hermesd.server.settings import ConfigFileError, Settings, load_settings

log = logging.getLogger("hermesd.serve")
SWITCH_INTERVAL_S = 0.0005
# a lost RPC worker: how long /health shows the reason before the process exits, and its exit code
WORKER_LOST_LINGER_S = 10.0
EXIT_WORKER_LOST = 3


def fail(message: str) -> None:
    click.echo(f"hermesd: error: {message}", err=True)
    sys.exit(2)


def engine_config(settings: Settings, model_path: Path, draft_path: Path | None = None) -> EngineConfig:
    threads = settings.threads or default_threads()
    extra_buffers = settings.cpu_extra_buffers
    if extra_buffers is None:
        extra_buffers = extra_buffers_by_default(read_cpu_features())
    draft = None
    if draft_path is not None:
        # the draft goes where the model's layers go: all on the GPUs, or all on the CPU
        draft = LlamaModelConfig(
            path=draft_path,
            gpu_layers=0 if settings.gpu_layers == 0 else -1,
            cpu_extra_buffers=extra_buffers,
        )
    return EngineConfig(
        model=LlamaModelConfig(
            path=model_path,
            gpu_layers=settings.gpu_layers,
            tensor_split=tuple(settings.tensor_split),
            cpu_extra_buffers=extra_buffers,
        ),
        context=ContextSettings(
            ctx=settings.ctx,
            parallel=settings.parallel,
            batch_size=settings.batch_size,
            threads=threads,
            threads_batch=settings.threads_batch or threads,
            kv_type=settings.kv_type,
            flash_attn=settings.flash_attn,
            max_queue=settings.max_queue,
        ),
        speculation=SpeculationSettings(
            ngram=settings.ngram_lookup,
            max_draft=settings.spec_max_draft,
            start=min(SpeculationSettings.start, settings.spec_max_draft),
            max_streams=settings.spec_max_streams,
            crowded_match=settings.spec_crowded_match,
            pool_match=settings.spec_pool_match,
            priced=settings.spec_priced,
        ),
        draft=draft,
        rpc_workers=tuple(settings.worker),
    )


def draft_model_path(settings: Settings, model_path: Path, summary: GGUFSummary) -> Path | None:
    """--draft-model: a path as given, or for `auto` the catalog's draft for this model's
    architecture and vocabulary, from the cache or fetched. A draft model is an optimization: when
    there is none to be had the daemon says so and serves without one."""
    ref = settings.draft_model
    if ref is None:
        return None
    if ref != "auto":
        return Path(ref).expanduser()
    from rich.console import Console

    from hermesd.cli.autoplan import fetch, load_catalog_or_fail
    from hermesd.cli.download_progress import RichDownloadProgress
    from hermesd.models.gguf_info import gguf_info
    from hermesd.models.hub import HubEnv, first_file

    info = gguf_info(summary)
    catalog = load_catalog_or_fail()
    variant = catalog.variant_of_file(model_path.name, info.arch, info.block_count)
    draft = catalog.drafts.get(variant.draft) if variant is not None else None
    if draft is None:
        log.warning(
            "--draft-model auto: the catalog has no draft model for %s; serving without one "
            "(--ngram-lookup needs no second model)",
            variant.name if variant is not None else f"{model_path.name} (not a Hermes 4 variant it knows)",
        )
        return None
    entry = draft.quants[0]
    try:
        with RichDownloadProgress(Console(stderr=True, soft_wrap=True)) as progress:
            paths = fetch(entry, HubEnv.from_environ(offline=settings.offline), progress)
    except click.ClickException as exc:
        log.warning("--draft-model auto: cannot get %s (%s); serving without a draft model", draft.name, exc)
        return None
    return first_file(paths)


def check_model_file(path: Path) -> tuple[Path, GGUFSummary]:
    """Refuse a missing, unreadable or non-regular file with one clear line."""
    try:
        st = path.stat()
    except FileNotFoundError:
        fail(f"{path}: no such model file")
    except OSError as exc:
        fail(f"{path}: cannot read model file: {exc.strerror}")
    import stat

    if not stat.S_ISREG(st.st_mode):
        fail(f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        fail(f"{path}: permission denied")
    if not looks_like_gguf(path):
        fail(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
    try:
        summary = validate_gguf(path, kind="model")
    except GGUFValidationError as exc:
        fail(f"refusing to load a damaged or hostile model file: {exc}")
    return path, summary


def check_engine(settings: Settings) -> GpuAccess:
    """What the engine this process loads can run on, against the GPUs NVML (or --hardware) sees.
    Refuses (exit 2) GPU layers on a CPU-only build, and GPUs the engine cannot use unless
    --allow-cpu; the engine's capabilities are recorded in the state dir for `hermesd doctor`."""
    from hermesd.cli.autoplan import UsageFailure, engine_access, load_hardware
    from hermesd.runtime.engine.capabilities import probe_capabilities, save_record

    caps = probe_capabilities()
    save_record(settings.state_dir, caps)
    log.info("engine: %s", caps.summary())
    if "gpu_layers" in settings.model_fields_set and settings.gpu_layers > 0 and not caps.gpu_offload:
        fail(
            f"--gpu-layers {settings.gpu_layers} asks for layers on a GPU, but the installed llama.cpp has "
            f"no GPU backend (backends: {', '.join(caps.backends)}): they would run on the CPU. Run "
            "`hermesd setup-gpu` to build it with CUDA, or use --gpu-layers 0"
        )
    try:
        access = engine_access(load_hardware(settings.hardware), real_engine=True)
    except UsageFailure as exc:
        fail(exc.format_message())
    assert access is not None
    if access.blocked and not settings.allow_cpu:
        fail(access.refusal())
    for problem in access.problems:
        level = logging.INFO if problem.severity == "info" else logging.WARNING
        log.log(level, "GPUs: %s%s", problem.message, f" Fix: {problem.fix}" if problem.fix else "")
    if access.blocked:
        log.warning(
            "--allow-cpu: the engine cannot use the %d GPU(s) NVML sees; serving a plan sized for the CPU",
            len(access.hardware.gpus),
        )
    return access


def check_exposure(settings: Settings) -> None:
    """A non-loopback bind with no API key would hand the model to the whole network."""
    if settings.is_loopback():
        return
    has_key = bool(settings.api_key or settings.api_key_file or settings.admin_api_key)
    if has_key:
        return
    if not settings.insecure_no_auth:
        fail(
            f"refusing to listen on {settings.host} without an API key: anyone who can reach this "
            "machine could use the model. Set --api-key / --api-key-file / HERMESD_API_KEY, or pass "
            "--insecure-no-auth if you really mean it"
        )
    log.warning("!!! listening on %s with NO authentication (--insecure-no-auth) !!!", settings.host)


@click.command("serve")
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    default=None,
    help="TOML config file (also HERMESD_CONFIG)",
)
@settings_options
def serve_command(config_file: Path | None, **kwargs: Any) -> None:
    """Serve a Hermes 4 model over an OpenAI-compatible API."""
    try:
        settings = load_settings(flags_from(kwargs), config_file)
    except ConfigFileError as exc:
        fail(str(exc))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        fail(f"invalid settings: {exc}")
    setup_logging(settings.log_level)
    check_exposure(settings)
    if settings.upstream is not None:
        run_upstream(settings)
        return
    workers = check_workers(settings)
    if settings.model is None:
        access = check_engine(settings)
        settings = settings_from_plan(settings, access, workers)
        assert settings.model is not None
        model_path, summary = check_model_file(settings.model.expanduser())
    else:
        # a bad --model file is one clear line before anything else is looked at
        model_path, summary = check_model_file(settings.model.expanduser())
        access = check_engine(settings)
        if "tensor_split" not in settings.model_fields_set and access.tensor_split():
            # some of the engine's GPUs cannot run this build: keep the layers off them
            settings = settings.model_copy(update={"tensor_split": list(access.tensor_split())})
        if workers:
            settings = split_over_workers(settings, workers, summary, access)
    log.info("settings: %s", settings.redacted())
    arch = summary.architecture or ""
    blocks = summary.kv.get(f"{arch}.block_count")
    trained = summary.kv.get(f"{arch}.context_length")
    if settings.min_ctx and isinstance(trained, int) and settings.min_ctx > trained:
        fail(f"--min-ctx {settings.min_ctx}: {model_path.name} was trained for at most {trained} tokens")
    draft_path = draft_model_path(settings, model_path, summary)
    run_server(settings, model_path, int(blocks) if isinstance(blocks, int) else 0, access, draft_path)


def run_upstream(settings: Settings) -> None:
    """--upstream: no model here; ask the upstream what it serves (one line if it cannot be reached)."""
    from hermesd.runtime.engine.upstream import UpstreamConfig, UpstreamEngine
    from hermesd.runtime.errors import HermesdError

    log.info("settings: %s", settings.redacted())
    assert settings.upstream is not None
    try:
        config = UpstreamConfig(
            url=settings.upstream,
            api_key=settings.upstream_api_key(),
            model=settings.upstream_model,
            connect_timeout=settings.upstream_connect_timeout,
            read_timeout=settings.upstream_timeout,
            adapter_root=settings.upstream_adapter_root,
            adapter_store=str(settings.state_dir / "adapters"),
        )
        engine = UpstreamEngine.connect(config)
    except OSError as exc:
        fail(f"--upstream-key-file: {exc}")
    except (HermesdError, ValueError) as exc:
        fail(str(exc))
    run_server(settings, Path(engine.info.path), 0, None, engine_factory=lambda: engine)


def check_workers(settings: Settings) -> tuple[Worker, ...]:
    """--worker: ask every worker what it offers now; one that is down is one line naming it."""
    if not settings.worker:
        return ()
    from hermesd.runtime.rpc import WorkerError, has_rpc, query_workers

    if not has_rpc():
        fail(
            "--worker needs a llama.cpp built with RPC; rebuild it with `hermesd setup-gpu` "
            "(GPU host) or `hermesd setup-gpu --cpu` (CPU-only host)"
        )
    try:
        return query_workers(settings.worker)
    except WorkerError as exc:
        fail(str(exc))
    raise AssertionError("unreachable")


def split_over_workers(
    settings: Settings, workers: tuple[Worker, ...], summary: GGUFSummary, access: GpuAccess
) -> Settings:
    """--model FILE --worker ...: no catalog variant to plan, so unless --gpu-layers and
    --tensor-split say otherwise, spread the layers evenly over the workers' devices and this host
    (runtime/rpc.py `even_split`, a stopgap until the planner places a bare file)."""
    from hermesd.runtime.rpc import even_split

    explicit = settings.model_fields_set
    if "tensor_split" in explicit and "gpu_layers" in explicit:
        return settings
    blocks = summary.kv.get(f"{summary.architecture or ''}.block_count")
    n_layer = int(blocks) if isinstance(blocks, int) else 0
    remote = sum(len(w.devices) for w in workers)
    gpu_layers, split = even_split(remote, len(access.usable), n_layer)
    log.info(
        "layers over %d worker device(s) and this host: %d offloaded, split %s",
        remote,
        gpu_layers,
        split,
    )
    return settings.model_copy(update={"gpu_layers": gpu_layers, "tensor_split": list(split)})


def settings_from_plan(settings: Settings, access: GpuAccess, workers: tuple[Worker, ...] = ()) -> Settings:
    """No --model: plan for this machine, fetch the files (or use the cache), and apply the plan's
    placement, context and slots wherever the user did not set them explicitly."""
    from rich.console import Console

    from hermesd.cli.autoplan import choose_model_for_serve, draft_request

    explicit = settings.model_fields_set
    console = Console(stderr=True, soft_wrap=True)
    try:
        draft = draft_request(settings.draft_model)
    except click.ClickException as exc:  # as at load: a draft that cannot be read is served without
        log.warning("serving without the draft model: %s", exc.format_message())
        draft = None
    try:
        path, plan = choose_model_for_serve(
            hardware_file=settings.hardware,
            variant=settings.variant,
            quant=settings.quant,
            ctx=settings.ctx if "ctx" in explicit else None,
            parallel=settings.parallel if "parallel" in explicit else None,
            kv_type=settings.kv_type,
            prefer=settings.prefer,
            offline=settings.offline,
            console=console,
            hardware=replace(access.planning_hardware(), workers=workers),
            min_ctx=settings.min_ctx,
            # --min-ctx trades the KV type before the quant, unless the user chose the KV type
            kv_fallback=("q8_0",) if settings.min_ctx and "kv_type" not in explicit else (),
            draft=draft,
        )
    except click.ClickException as exc:
        fail(exc.format_message())
    update: dict[str, Any] = {"model": path}
    planned = {
        "ctx": plan.context,
        "parallel": plan.parallel,
        "gpu_layers": plan.n_gpu_layers,
        "tensor_split": list(access.tensor_split(plan.tensor_split)),
        "flash_attn": plan.flash_attn,
        "kv_type": plan.kv_type,
    }
    if workers:  # register exactly the workers the plan uses, in its order: their devices come first
        remote = sum(1 for d in plan.placement if d.host is not None)
        split = engine_split(plan, access.tensor_split(plan.tensor_split[remote:]))
        planned.update(gpu_layers=split.n_gpu_layers, tensor_split=list(split.tensor_split))
        update["worker"] = list(split.workers)
    update.update({k: v for k, v in planned.items() if k not in explicit})
    log.info(
        "plan: %s %s, %d/%d layers on GPUs, context %d x %d",
        plan.variant,
        plan.quant,
        min(plan.n_gpu_layers, plan.layers_total),
        plan.layers_total,
        plan.context,
        plan.parallel,
    )
    return settings.model_copy(update=update)


def run_server(
    settings: Settings,
    model_path: Path,
    total_layers: int,
    access: GpuAccess | None,
    draft_path: Path | None = None,
    *,
    engine_factory: Callable[[], Engine] | None = None,  # --upstream: the remote engine, not llama.cpp
) -> None:
    import uvicorn

    # The decode thread needs the GIL for a few microseconds between two llama_decode calls; with
    # the default 5 ms switch interval it can wait that long behind the event loop's HTTP work.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    from sse_starlette.sse import AppStatus

    class DrainingServer(uvicorn.Server):
        """On SIGTERM/SIGINT, drain the engine while uvicorn stops listening, so running streams
        finish (or end with a final event) before the connections are closed."""

        def __init__(self, config: uvicorn.Config, app: Any) -> None:
            super().__init__(config)
            self.hermesd_app = app
            self._drain_task: asyncio.Task[None] | None = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self._drain_task is None:
                sdnotify.notify("STOPPING=1")
                log.info("signal %d: draining (up to %.0f s)", sig, settings.drain_timeout)
                loop = asyncio.get_event_loop()
                self._drain_task = loop.create_task(drain_app(self.hermesd_app.state.hermesd))
                self._drain_task.add_done_callback(lambda _t: setattr(AppStatus, "should_exit", True))
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal after shutting down, which would make a clean drain
            # exit with -15; a drained shutdown is a success and exits 0
            self._captured_signals.clear()

    from hermesd.server.app import create_app, drain_app

    config = engine_config(settings, model_path, draft_path)
    failure: list[str] = []
    server: uvicorn.Server | None = None

    def on_load_error(message: str) -> None:
        failure.append(message)
        if server is not None:
            server.should_exit = True

    def on_ready() -> None:
        log.info("ready on http://%s:%d", settings.host, settings.port)
        sdnotify.notify("READY=1")

    def on_worker_lost(reason: str) -> None:
        """Any thread. The model's layers on that worker, and the step waiting for it, are gone
        with the connection (ggml can neither finish nor free them), so no reload in place: /health
        says why for WORKER_LOST_LINGER_S while the engine ends the streams, then the process exits
        non-zero and systemd (Restart=on-failure) starts it again, which waits for the worker."""
        log.error("%s; exiting in %.0f s so that hermesd restarts", reason, WORKER_LOST_LINGER_S)
        app.state.hermesd.load_error = reason
        threading.Timer(WORKER_LOST_LINGER_S, os._exit, args=(EXIT_WORKER_LOST,)).start()

    def load_engine() -> LlamaCppEngine:
        def load(layers: int) -> LlamaCppEngine:
            engine = LlamaCppEngine(
                replace(config, model=replace(config.model, gpu_layers=layers)), on_worker_lost=on_worker_lost
            )
            try:
                for warning in check_offload(
                    engine.load_report, requested_gpu_layers=layers, gpu_names=engine.gpu_names
                ):
                    log.warning("%s", warning)
            except OffloadError:
                engine.close()
                raise
            return engine

        return load_with_fallback(
            load,
            gpu_layers=config.model.gpu_layers,
            total_layers=total_layers,
            gpu_available=bool(access and access.usable),
        )

    app = create_app(settings, engine_factory or load_engine, on_ready=on_ready, on_load_error=on_load_error)
    uv_config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=int(settings.drain_timeout) + 5,
    )
    # sse-starlette would cut every stream the moment SIGTERM arrives; hermesd drains instead and
    # ends whatever is left with a final event, so it turns that off (and back on after the drain)
    AppStatus.disable_automatic_graceful_drain()
    server = DrainingServer(uv_config, app)
    server.run()
    if failure:
        click.echo(f"hermesd: error: {failure[0]}", err=True)
        sys.exit(1)
