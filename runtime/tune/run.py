"""One `hermesd tune` session: check the data, train, export, register. The CLI drives it.

The run folder (`<state>/runs/<name>/` unless --run-dir) keeps: config.json (flags, base, device,
the identity a resume must match), data_summary.json (counts, lengths, split, every issue),
train.log, metrics.jsonl (one line per optimizer step) and metrics.json (eval loss before/after,
time, throughput), checkpoint/ while a run is unfinished, and the exported adapter.gguf.
Nothing reaches the adapter store until the adapter file is complete: a run that fails, stops or is
killed leaves the store as it was.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from hermesd.models.hub import DownloadProgress, HubEnv, HubError
from hermesd.models.store import AdapterRecord, AdapterStore, StoreError, check_name
from hermesd.runtime.tune import base as base_mod
from hermesd.runtime.tune.base import BaseSpec, TokenizerBundle, TuneError
from hermesd.runtime.tune.checkpoint import clear_checkpoint, read_checkpoint_state
from hermesd.runtime.tune.config import TrainConfig, dumps, file_sha256, identity_differences, run_identity
from hermesd.runtime.tune.daemon import DaemonClient
from hermesd.runtime.tune.data import Conversation, DataIssue, load_jsonl, split_train_eval
from hermesd.runtime.tune.device import DeviceChoice, DevicePlan, MethodChoice
from hermesd.runtime.tune.pairing import check_base_pairing
from hermesd.runtime.tune.render import LengthPolicy, Row, build_rows
from hermesd.runtime.tune.summary import DataSummary, summarize
from hermesd.runtime.tune.train import StepReport, StopFlag

log = logging.getLogger(__name__)

SYNTH_FILE = "data-with-thinking.jsonl"


class NoUsableData(TuneError):
    def __init__(self, message: str, issues: list[DataIssue]) -> None:
        super().__init__(message)
        self.issues = issues


@dataclass(frozen=True)
class TuneOptions:
    name: str
    data: Path
    base: str
    state_dir: Path
    train: TrainConfig = field(default_factory=TrainConfig)
    base_gguf: Path | None = None
    eval_split: float = 0.1
    length_policy: LengthPolicy = "drop"
    device: DeviceChoice = "auto"
    method: MethodChoice = "auto"
    offline: bool = False  # the hub is not asked: a hub base must be in the Hugging Face cache
    run_dir: Path | None = None
    resume: bool = False
    replace: bool = False
    synthesize_url: str | None = None
    synthesize_api_key: str | None = None

    @property
    def folder(self) -> Path:
        return self.run_dir or self.state_dir / "runs" / self.name

    def hub_env(self) -> HubEnv:
        return HubEnv.from_environ(offline=self.offline)


class TuneEvents(Protocol):
    """How a run reports to whoever shows it (the CLI uses rich; tests record)."""

    def message(self, text: str) -> None: ...

    def training_started(self, start_step: int, total_steps: int) -> None: ...

    def step(self, report: StepReport) -> None: ...


@dataclass
class Prepared:
    spec: BaseSpec
    arch: str
    bundle: TokenizerBundle
    train_rows: list[Row]
    eval_rows: list[Row]
    issues: list[DataIssue]
    summary: DataSummary
    data_sha256: str


@dataclass(frozen=True)
class TuneOutcome:
    status: Literal["dry-run", "stopped", "finished"]
    run_dir: Path
    summary: DataSummary
    eval_loss_before: float | None = None
    eval_loss_after: float | None = None
    step: int = 0
    total_steps: int = 0
    seconds: float = 0.0
    adapter: AdapterRecord | None = None


class TuneRun:
    def __init__(
        self,
        opts: TuneOptions,
        events: TuneEvents,
        stop: StopFlag | None = None,
        progress: Callable[[], AbstractContextManager[DownloadProgress]] | None = None,
    ) -> None:
        self.opts = opts
        self.events = events
        self.stop = stop or StopFlag()
        self.progress = progress  # draws a hub base's weight download (a live display while it runs)
        try:
            check_name(opts.name)
        except StoreError as exc:
            raise TuneError(str(exc)) from None
        self.store = AdapterStore(opts.state_dir)
        self.folder = opts.folder
        self._exit = ExitStack()

    def __enter__(self) -> TuneRun:
        """Own the run folder: a lock (one run per folder) and the run's log file."""
        with ExitStack() as stack:
            stack.enter_context(_run_lock(self.folder))
            stack.enter_context(_run_log(self.folder / "train.log"))
            self._exit = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    # -- checks and data
    def prepare(self) -> Prepared:
        opts = self.opts
        if self.store.exists(opts.name) and not opts.replace:
            raise TuneError(
                f"an adapter named {opts.name!r} is already registered; "
                "choose another --name or pass --replace"
            )
        if not opts.data.is_file():
            raise TuneError(f"--data {opts.data}: no such file")
        spec = base_mod.resolve_base(opts.base, opts.base_gguf)
        # a Hugging Face base and the served GGUF: one network, or refused before anything trains
        check_base_pairing(spec, opts.hub_env())
        arch = base_mod.model_architecture(spec)
        self._check_run_folder()
        loaded = load_jsonl(opts.data)
        conversations, issues = loaded.conversations, list(loaded.issues)
        data_file = opts.data
        if opts.synthesize_url:
            conversations, data_file = self._synthesized(conversations, issues)
        if not conversations:
            raise NoUsableData(f"{opts.data}: no usable conversation", issues)
        bundle = base_mod.tokenizer_for(spec)
        train_convs, eval_convs = split_train_eval(conversations, opts.eval_split, opts.train.seed)
        train_rows = self._rows(train_convs, bundle, issues)
        eval_rows = self._rows(eval_convs, bundle, issues)
        if not train_rows:
            raise NoUsableData(f"{opts.data}: no training row is left after the checks", issues)
        summary = summarize(str(opts.data), loaded.lines, len(conversations), train_rows, eval_rows, issues)
        record = summary.to_json() | {"issues": [str(i) for i in issues]}
        _write_json(self.folder / "data_summary.json", record)
        return Prepared(spec, arch, bundle, train_rows, eval_rows, issues, summary, file_sha256(data_file))

    def _rows(self, convs: list[Conversation], bundle: TokenizerBundle, issues: list[DataIssue]) -> list[Row]:
        rows: list[Row] = []
        for conv in convs:
            got, found = build_rows(
                conv,
                bundle.chat_format,
                bundle.tokenizer,
                path=str(self.opts.data),
                max_seq_len=self.opts.train.max_seq_len,
                policy=self.opts.length_policy,
            )
            rows += got
            issues += found
        return rows

    def _check_run_folder(self) -> None:
        state = read_checkpoint_state(self.folder)
        if self.opts.resume and state is None:
            raise TuneError(f"--resume: no interrupted run to resume in {self.folder}")
        if not self.opts.resume and state is not None:
            raise TuneError(
                f"{self.folder} holds a run interrupted at step {state.step}: pass --resume to continue it, "
                f"or remove that folder to start over"
            )

    def _synthesized(
        self, conversations: list[Conversation], issues: list[DataIssue]
    ) -> tuple[list[Conversation], Path]:
        """Conversations with thinking traces filled in; a resumed run reuses the saved ones so its
        data is exactly the interrupted run's."""
        from hermesd.runtime.tune.synth import synthesize, write_conversations

        saved = self.folder / SYNTH_FILE
        if self.opts.resume and saved.is_file():
            self.events.message(f"using the thinking traces synthesized before, in {saved}")
            again = load_jsonl(saved)
            return again.conversations, saved
        assert self.opts.synthesize_url is not None
        client = DaemonClient(self.opts.synthesize_url, self.opts.synthesize_api_key, timeout=600)
        self.events.message(f"asking hermesd at {client.url} for thinking traces...")
        out, found = synthesize(conversations, client, path=str(self.opts.data))
        issues += found
        write_conversations(saved, out)
        self.events.message(
            f"{len(out) - len(conversations)} thinking traces added; the data is saved in {saved}"
        )
        return out, saved

    # -- training
    def train(self, prepared: Prepared, split: Sequence[tuple[int, int]] = ()) -> TuneOutcome:
        """Train, export and register. `split` is the training plan's (GPU, layers) per GPU: the
        one GPU it chose, or the GPUs it spreads the model over."""
        try:
            with _saving_errors(self.folder):
                return self._train(prepared, split)
        finally:
            prepared.bundle.close()

    def _weights(self, spec: BaseSpec) -> BaseSpec:
        """A hub base's safetensors in the Hugging Face cache (fetched, resumed, verified like every
        download); the run loads that folder. Other bases load as they are."""
        if spec.kind != "hub":
            return spec
        from hermesd.models.hub import HF_MODEL_FILES, ensure_repo_files

        self.events.message(f"fetching the weights of {spec.ref} (Hugging Face cache; resumable)")
        try:
            with self.progress() if self.progress else nullcontext() as progress:
                folder = ensure_repo_files(spec.ref, self.opts.hub_env(), HF_MODEL_FILES, progress=progress)
        except HubError as exc:
            raise TuneError(f"--base {spec.ref}: {exc}") from None
        return BaseSpec("hf-dir", str(folder), spec.gguf)

    def _train(self, p: Prepared, split: Sequence[tuple[int, int]]) -> TuneOutcome:
        import torch

        from hermesd.runtime.tune import device as dev
        from hermesd.runtime.tune.export import ADAPTER_FILE, export_adapter, manifest, save_peft
        from hermesd.runtime.tune.train import TrainLoop, attach_lora, evaluate, make_optimizer

        opts, cfg = self.opts, self.opts.train
        hf_base = p.spec.kind != "gguf"
        plan = dev.choose_device(
            opts.device, dev.detect_accelerators(), method=opts.method, hf_base=hf_base, split=split
        )
        self.events.message(f"device: {plan.reason}")
        identity = run_identity(cfg, p.spec.label, p.bundle.fingerprint, p.data_sha256)
        if opts.resume:
            self._check_identity(identity)
        self._write_config(p, plan, identity)
        if not opts.resume:
            (self.folder / "metrics.jsonl").unlink(missing_ok=True)
            (self.folder / ADAPTER_FILE).unlink(missing_ok=True)

        weights = self._weights(p.spec)
        t_load = time.monotonic()
        torch.manual_seed(cfg.seed)
        model = dev.prepare_for_training(base_mod.load_hf_model(weights, dev.load_kwargs(plan)), plan)
        model = attach_lora(model, cfg)
        # inputs go where the embedding is (the first GPU when the model is split)
        device = _input_device(model) if plan.device == "cuda" else "cpu"
        self.events.message(
            f"base loaded in {time.monotonic() - t_load:.1f} s{_four_bit(model)}: {_trainable(model)}"
        )
        pad = p.bundle.tokenizer.eos_id
        eval_rows = p.eval_rows or p.train_rows
        loop = TrainLoop(
            model=model,
            optimizer=make_optimizer(model, cfg),
            rows=p.train_rows,
            config=cfg,
            pad_id=pad,
            run_dir=self.folder,
            identity=identity,
            device=device,
            stop=self.stop,
            on_step=self._on_step,
        )
        start = loop.resume() if opts.resume else 0
        with _out_of_memory(plan.device, cfg):
            if loop.eval_loss_before is None:
                loop.eval_loss_before = evaluate(model, eval_rows, cfg.batch_size, pad, device)
            before = loop.eval_loss_before
            where = "train rows (no held-out eval)" if not p.eval_rows else "held-out eval rows"
            self.events.message(f"eval loss before: {before:.4f} on {len(eval_rows)} {where}")
            total = cfg.total_steps(len(p.train_rows))
            self.events.training_started(start, total)
            result = loop.run(start)
        metrics: dict[str, Any] = {
            "status": result.status,
            "eval_loss_before": before,
            "step": result.step,
            "total_steps": total,
            "train_seconds": round(result.seconds, 2),
            "tokens": result.tokens,
            "tokens_per_s": round(result.tokens / max(result.seconds, 1e-9), 1),
            "last_train_loss": result.last_loss,
            "eval_on": where,
        }
        if result.status == "stopped":
            _write_json(self.folder / "metrics.json", metrics)
            return TuneOutcome(
                "stopped", self.folder, p.summary, before, None, result.step, total, result.seconds
            )
        with _out_of_memory(plan.device, cfg):
            after = evaluate(model, eval_rows, cfg.batch_size, pad, device)
        metrics["eval_loss_after"] = after
        self.events.message(f"eval loss after: {after:.4f}")
        adapter_path = self.folder / ADAPTER_FILE
        export_adapter(
            model,
            adapter_path,
            arch=p.arch,
            config=cfg,
            name=opts.name,
            base_fingerprint=p.bundle.fingerprint,
            base_name=p.bundle.base_name,
        )
        peft_files = save_peft(model, self.folder / "peft")
        record = manifest(
            base_fingerprint=p.bundle.fingerprint,
            base_path=p.spec.label,
            base_name=p.bundle.base_name,
            arch=p.arch,
            config=cfg,
            run_dir=self.folder,
            metrics=metrics,
            data={"path": str(opts.data), "sha256": p.data_sha256, **_data_counts(p.summary)},
        )
        _write_json(self.folder / "metrics.json", metrics)
        entry = self.store.register(
            opts.name, adapter_path, record, replace=opts.replace, extra_files=peft_files
        )
        clear_checkpoint(self.folder)
        return TuneOutcome(
            "finished", self.folder, p.summary, before, after, result.step, total, result.seconds, entry
        )

    def _on_step(self, report: StepReport) -> None:
        line = {
            "step": report.step,
            "epoch": report.epoch + 1,
            "loss": round(report.loss, 6),
            "lr": report.lr,
            "tokens_per_s": round(report.tokens_per_s, 1),
            "elapsed_s": round(report.elapsed_s, 2),
        }
        with (self.folder / "metrics.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
        self.events.step(report)

    def _check_identity(self, identity: dict[str, Any]) -> None:
        state = read_checkpoint_state(self.folder)
        if state is None:
            raise TuneError(f"--resume: no interrupted run to resume in {self.folder}")
        differences = identity_differences(state.identity, identity)
        if differences:
            raise TuneError(
                "--resume: this run differs from the interrupted one ("
                + "; ".join(differences)
                + "); use the same flags and data, or remove "
                + str(self.folder)
                + " to start over"
            )

    def _write_config(self, p: Prepared, plan: DevicePlan, identity: dict[str, Any]) -> None:
        config = {
            "name": self.opts.name,
            "data": str(self.opts.data),
            "base": {
                "kind": p.spec.kind,
                "ref": p.spec.ref,
                "gguf": str(p.spec.gguf) if p.spec.gguf else None,
            },
            "base_fingerprint": p.bundle.fingerprint,
            "architecture": p.arch,
            "chat_format": p.bundle.chat_format.name,
            "train": self.opts.train.to_json(),
            "eval_split": self.opts.eval_split,
            "length_policy": self.opts.length_policy,
            "device": {
                "device": plan.device,
                "method": plan.method,
                "dtype": plan.compute_dtype,
                "device_map": plan.device_map,
            },
            "identity": identity,
        }
        _write_json(self.folder / "config.json", config)


def _data_counts(summary: DataSummary) -> dict[str, Any]:
    return {
        "rows": summary.rows,
        "with_reasoning": summary.with_reasoning,
        "direct": summary.direct,
        "train_rows": summary.train_rows,
        "eval_rows": summary.eval_rows,
    }


def _input_device(model: Any) -> Any:
    return model.get_input_embeddings().weight.device


@contextmanager
def _out_of_memory(device: str, config: Any) -> Iterator[None]:
    """Out of memory in a step: one line with what to change, never a traceback. Nothing is
    registered; checkpoints already written stay for --resume."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError:
        where = "GPU" if device == "cuda" else "CPU"
        raise TuneError(
            f"out of {where} memory in a training step (--max-seq-len {config.max_seq_len}, "
            f"--batch-size {config.batch_size}, --rank {config.rank}): the plan's estimate was too "
            "low for this machine; try a shorter --max-seq-len, or check what else uses the "
            f"{where} (nvidia-smi). Nothing was registered."
        ) from None


@contextmanager
def _saving_errors(folder: Path) -> Iterator[None]:
    """A full disk (or a read-only one) while saving a checkpoint or the adapter: one line. The
    adapter store is untouched (nothing is registered before its file is complete)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        raise TuneError(
            f"cannot write {exc.filename or folder}: {exc.strerror}. Nothing was registered; free some "
            f"space and run the same command with --resume to continue from the last checkpoint"
        ) from None


def _four_bit(model: Any) -> str:
    """How many linear layers bitsandbytes holds in 4 bits (QLoRA), as the load message says it."""
    n = sum(1 for m in model.modules() if type(m).__module__.startswith("bitsandbytes."))
    return f" ({n} linear layers in 4-bit NF4)" if n else ""


def _trainable(model: Any) -> str:
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"{trained:,} trainable parameters of {total:,} ({100 * trained / max(total, 1):.2f}%)"


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(dumps(data), encoding="utf-8")
    tmp.replace(path)


@contextmanager
def _run_lock(folder: Path) -> Iterator[None]:
    """One run per folder at a time (a second `tune --name X` while one trains would corrupt it)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TuneError(f"another hermesd tune is running in {folder}") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _run_log(path: Path) -> Iterator[None]:
    """Copy hermesd's log records into the run folder for the length of the run."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("hermesd")
    previous = root.level
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


def remove_run(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
