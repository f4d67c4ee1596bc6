"""`hermesd tune`: train a LoRA on chat data, export it as GGUF, register it, hot-load it."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, overload

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from hermesd.cli.adapters_cmd import daemon_options, resolve
from hermesd.cli.daemon_address import fail
from hermesd.cli.download_progress import RichDownloadProgress
from hermesd.cli.hardware_option import hardware_option
from hermesd.runtime.errors import HermesdError
from hermesd.runtime.tune.config import (
    DEFAULT_EPOCHS,
    DEFAULT_GRAD_ACCUM,
    DEFAULT_TARGETS,
    MIN_OPTIMIZER_STEPS,
    TrainConfig,
    describe_steps,
    dumps,
    fit_to_data,
    learning_warning,
)
from hermesd.runtime.tune.daemon import hot_load
from hermesd.runtime.tune.data import AUTO_MAX_SEQ_LEN, choose_max_seq_len, format_issues
from hermesd.runtime.tune.device import METHOD_CHOICES, Accelerators, choose_method
from hermesd.runtime.tune.plan import Machine, PlanRequest, TrainingPlan, gib
from hermesd.runtime.tune.render import Row
from hermesd.runtime.tune.run import NoUsableData, Prepared, TuneOptions, TuneOutcome, TuneRun
from hermesd.runtime.tune.train import StepReport, StopFlag

EXIT_INTERRUPTED = 130


class ConsoleEvents:
    """Shows a run on the terminal: messages, then a progress bar with loss and tokens/s."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.task: Any = None
        self._last_print = 0.0

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def training_started(self, start_step: int, total_steps: int) -> None:
        self.progress = Progress(
            TextColumn("training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  {task.fields[tps]} tok/s  lr {task.fields[lr]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=total_steps, completed=start_step, loss="-", tps="-", lr="-"
        )

    def step(self, report: StepReport) -> None:
        if self.progress is None:
            return
        self.progress.update(
            self.task,
            completed=report.step,
            loss=f"{report.loss:.4f}",
            tps=f"{report.tokens_per_s:.0f}",
            lr=f"{report.lr:.1e}",
        )
        # Without a terminal (CI, a log file) the bar does not redraw: print a line now and then.
        if not self.console.is_terminal and (
            time.monotonic() - self._last_print > 5 or report.step == report.total
        ):
            self._last_print = time.monotonic()
            self.console.print(
                f"step {report.step}/{report.total}  loss {report.loss:.4f}  "
                f"{report.tokens_per_s:.0f} tok/s  lr {report.lr:.1e}",
                highlight=False,
            )

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


@contextmanager
def stop_on_signals(stop: StopFlag, console: Console) -> Iterator[None]:
    """First Ctrl-C (or SIGTERM): finish the current step, checkpoint, stop. Second Ctrl-C: now."""

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set("Ctrl-C" if signum == signal.SIGINT else "SIGTERM")
        console.print("stopping after this step (Ctrl-C again to abort at once)...")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _targets(value: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in value.split(",") if t.strip())


@click.command("tune")
@click.option("--data", type=click.Path(path_type=Path, dir_okay=False), help="JSONL training data")
@click.option("--name", help="adapter name; clients then use model '<base-id>:<name>'")
@click.option(
    "--base",
    default=None,
    help="the served GGUF (default: the daemon's --model), a Hugging Face folder, or a hub id",
)
@click.option(
    "--base-gguf",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="with a folder or hub --base: the GGUF the adapter will be served on",
)
@click.option("--rank", type=int, default=TrainConfig.rank, show_default=True)
@click.option("--alpha", type=float, default=TrainConfig.alpha, show_default=True)
@click.option("--dropout", type=float, default=TrainConfig.dropout, show_default=True)
@click.option("--target-modules", default=",".join(DEFAULT_TARGETS), show_default=True)
@click.option("--lr", type=float, default=TrainConfig.lr, show_default=True, help="peak learning rate")
@click.option(
    "--lr-schedule", type=click.Choice(["cosine", "linear", "constant"]), default="cosine", show_default=True
)
@click.option("--warmup-ratio", type=float, default=TrainConfig.warmup_ratio, show_default=True)
@click.option(
    "--epochs",
    type=int,
    default=None,
    help=f"passes over the data [default: {DEFAULT_EPOCHS}, more when that gives fewer than "
    f"{MIN_OPTIMIZER_STEPS} optimizer steps]",
)
@click.option("--batch-size", type=int, default=TrainConfig.batch_size, show_default=True)
@click.option(
    "--grad-accum",
    type=int,
    default=None,
    help=f"rows per optimizer step = batch x this [default: {DEFAULT_GRAD_ACCUM}, less when that gives "
    f"fewer than {MIN_OPTIMIZER_STEPS} optimizer steps]",
)
@click.option(
    "--max-seq-len",
    type=int,
    default=None,
    help="longest training row in tokens [default: long enough for 95 % of the rows, at most "
    f"{AUTO_MAX_SEQ_LEN} and what the plan fits]",
)
@click.option(
    "--too-long",
    type=click.Choice(["drop", "truncate"]),
    default="drop",
    show_default=True,
    help="what to do with examples longer than --max-seq-len",
)
@click.option("--seed", type=int, default=TrainConfig.seed, show_default=True)
@click.option("--max-steps", type=int, default=None, help="cap on optimizer steps")
@click.option(
    "--save-every", type=int, default=TrainConfig.save_every, show_default=True, help="checkpoint interval"
)
@click.option(
    "--eval-split", type=float, default=0.1, show_default=True, help="fraction held out for eval loss"
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option(
    "--method",
    type=click.Choice(list(METHOD_CHOICES)),
    default="auto",
    show_default=True,
    help="auto: qlora-nf4 on a CUDA GPU (on the served model's Hugging Face weights), lora-bf16 on a "
    "GPU for a GGUF base, lora-fp32 on the CPU",
)
@click.option("--offline", is_flag=True, help="never ask the hub: a hub base must be in the cache")
@click.option("--run-dir", type=click.Path(path_type=Path, file_okay=False), default=None)
@click.option("--resume", is_flag=True, help="continue the interrupted run of this --name")
@click.option("--replace", is_flag=True, help="replace a registered adapter of the same name")
@click.option("--dry-run", is_flag=True, help="check the data, print the summary, train nothing")
@click.option("--plan", "plan_only", is_flag=True, help="say whether training --base fits this machine")
@click.option("--json", "as_json", is_flag=True, help="with --plan: the plan as JSON")
@hardware_option("with --plan: plan for the machine this JSON profile describes (as `hermesd plan`)")
@click.option("--variant", default=None, help="with --plan: plan for this catalog variant (14b, 70b, ...)")
@click.option(
    "--tokens-per-s",
    type=float,
    default=None,
    help="with --plan: a measured training throughput, for the time per epoch",
)
@click.option(
    "--synthesize-thinking",
    "synth_url",
    default=None,
    metavar="URL",
    help="ask this hermesd for thinking traces",
)
@click.option("--no-load", is_flag=True, help="do not load the adapter into the running daemon")
@click.option("--stop-after", type=int, default=None, hidden=True)
@click.option("--log-level", default="warning", show_default=True)
@daemon_options
def tune_command(**kw: Any) -> None:
    """Train a LoRA adapter on chat data (JSONL) and hot-load it into the running hermesd."""
    _console_logging(kw["log_level"])
    console = Console(soft_wrap=True)
    state_dir, client = resolve(kw["state_dir"], kw["serve_url"], kw["api_key"])
    if kw["plan_only"]:
        sys.exit(_show_plan(kw, console, state_dir))
    if not kw["data"] or not kw["name"]:
        fail("--data and --name are required (or --plan alone)", 2)
    try:
        base, base_gguf = _base(kw)
        train = TrainConfig(
            rank=kw["rank"],
            alpha=kw["alpha"],
            dropout=kw["dropout"],
            target_modules=_targets(kw["target_modules"]),
            lr=kw["lr"],
            schedule=kw["lr_schedule"],
            warmup_ratio=kw["warmup_ratio"],
            epochs=kw["epochs"] or DEFAULT_EPOCHS,
            batch_size=kw["batch_size"],
            grad_accum=kw["grad_accum"] or DEFAULT_GRAD_ACCUM,
            max_seq_len=kw["max_seq_len"] or AUTO_MAX_SEQ_LEN,
            seed=kw["seed"],
            max_steps=kw["max_steps"],
            save_every=kw["save_every"],
            stop_after=kw["stop_after"],
        )
        opts = TuneOptions(
            name=kw["name"],
            data=kw["data"],
            base=base,
            state_dir=state_dir,
            train=train,
            base_gguf=base_gguf,
            eval_split=kw["eval_split"],
            length_policy=kw["too_long"],
            device=kw["device"],
            method=kw["method"],
            offline=kw["offline"],
            run_dir=kw["run_dir"],
            resume=kw["resume"],
            replace=kw["replace"],
            synthesize_url=kw["synth_url"],
            synthesize_api_key=kw["api_key"],
        )
        if kw["max_seq_len"] is None:  # rows are tokenized up to what fits, then held to the data's length
            opts = replace(opts, train=replace(train, max_seq_len=_seq_cap(opts)))
        auto = {"grad_accum_set": kw["grad_accum"] is not None, "epochs_set": kw["epochs"] is not None}
        outcome, opts = _run(opts, console, kw["dry_run"], auto, auto_seq=kw["max_seq_len"] is None)
    except NoUsableData as exc:
        for line in format_issues(exc.issues):
            console.print(line, highlight=False, markup=False)
        fail(str(exc))
    except HermesdError as exc:
        fail(str(exc))
    except KeyboardInterrupt:  # before training started (data checks, synthesis): nothing to keep
        fail("interrupted before training; nothing was trained or registered", EXIT_INTERRUPTED)
    if outcome.status == "stopped" and outcome.step == 0:
        console.print("stopped before the first step; nothing was trained or registered", highlight=False)
        sys.exit(EXIT_INTERRUPTED)
    if outcome.status == "stopped":
        console.print(
            f"stopped at step {outcome.step}/{outcome.total_steps}; the checkpoint is in {outcome.run_dir}. "
            f"Continue with the same command and --resume. Nothing was registered.",
            highlight=False,
        )
        sys.exit(EXIT_INTERRUPTED if kw["stop_after"] is None else 0)
    if outcome.status == "finished":
        _finish(outcome, opts, client, console, kw["no_load"])


def _console_logging(level_name: str) -> None:
    """Log lines at --log-level on stderr. The run raises hermesd's loggers to INFO for its
    train.log, so the level goes on the handler, not only on the root logger."""
    root = logging.getLogger()
    if root.handlers:  # embedded (tests, another program): leave their logging alone
        return
    level = getattr(logging, level_name.upper(), logging.WARNING)
    handler = logging.StreamHandler()
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)


def _base(kw: dict[str, Any]) -> tuple[str, Path | None]:
    """--base and --base-gguf as the run will use them. Without --base: the served GGUF; and when the
    method is 4-bit QLoRA (a CUDA GPU, or --method qlora-nf4) and the served file is a catalog
    variant, that variant's Hugging Face repo, the adapter written for the served GGUF."""
    if kw["base"]:
        if kw["base_gguf"] is None and not Path(kw["base"]).expanduser().is_file():
            # a Hugging Face base: the adapter is for the served GGUF (its fingerprint), else the
            # daemon would refuse it after the training
            served = _served_model(required=False)
            if served is not None and Path(served).is_file():
                return kw["base"], Path(served)
        return kw["base"], kw["base_gguf"]
    from hermesd.runtime.tune.shape import catalog_repo_of

    served = _served_model()
    repo = catalog_repo_of(Path(served))
    if repo is None:
        return served, kw["base_gguf"]
    acc = _accelerators()
    method = choose_method(
        kw["device"], kw["method"], cuda=acc.cuda, bitsandbytes=acc.bitsandbytes, hf_base=True
    )
    if method != "qlora-nf4":
        return served, kw["base_gguf"]
    return repo, kw["base_gguf"] or Path(served)


def _accelerators() -> Accelerators:
    from hermesd.runtime.tune.device import detect_accelerators

    return detect_accelerators()


@overload
def _served_model(required: Literal[True] = ...) -> str: ...


@overload
def _served_model(required: bool) -> str | None: ...


def _served_model(required: bool = True) -> str | None:
    """The GGUF hermesd serves (its settings: HERMESD_MODEL, the config file)."""
    from hermesd.server.settings import load_settings

    try:
        model = load_settings({}).model
    except ValueError as exc:
        if not required:
            return None
        fail(f"cannot read hermesd settings: {exc}")
    if model is None:
        if not required:
            return None
        fail("no --base given and no model in hermesd's settings (HERMESD_MODEL / config file)", 2)
    return str(model)


def _run(
    opts: TuneOptions, console: Console, dry_run: bool, auto: dict[str, bool], *, auto_seq: bool
) -> tuple[TuneOutcome, TuneOptions]:
    """Prepare the data, fit the sequence length and the steps to it, check the plan, then train
    (unless a dry run). Returns the outcome and the options as trained."""
    events = ConsoleEvents(console)
    stop = StopFlag()
    with TuneRun(opts, events, stop, progress=lambda: RichDownloadProgress(console)) as run:
        prepared = run.prepare()
        if auto_seq:
            prepared, length = _hold_to_data_length(prepared, opts, run.folder)
            run.opts = opts = replace(opts, train=replace(opts.train, max_seq_len=length))
        for line in format_issues(prepared.issues):
            console.print(line, highlight=False, markup=False)
        for line in prepared.summary.lines_for_humans():
            console.print(line, highlight=False, markup=False)
        n_rows = len(prepared.train_rows)
        train, notes = fit_to_data(opts.train, n_rows, **auto)
        run.opts = opts = replace(opts, train=train)
        for note in notes:
            console.print(note, highlight=False, markup=False)
        console.print(describe_steps(train, n_rows), highlight=False, markup=False)
        plan = _check_plan(prepared, opts, run.folder, console)
        if dry_run:
            prepared.bundle.close()
            console.print(f"dry run: nothing trained (summary in {run.folder / 'data_summary.json'})")
            return TuneOutcome("dry-run", run.folder, prepared.summary), opts
        if plan is not None and not plan.fits:
            prepared.bundle.close()
            fail(_refusal(plan))
        try:
            # the GPU(s) the plan chose: one (the one with the most free memory), or the split
            split = tuple((d.index, d.layers) for d in plan.devices) if plan is not None else ()
            with stop_on_signals(stop, console):
                return run.train(prepared, split), opts
        except KeyboardInterrupt:
            events.stop()
            fail(
                f"aborted; nothing was registered. The last checkpoint (if any) is in {run.folder}",
                EXIT_INTERRUPTED,
            )
        finally:
            events.stop()


def _finish(outcome: TuneOutcome, opts: TuneOptions, client: Any, console: Console, no_load: bool) -> None:
    before, after = outcome.eval_loss_before, outcome.eval_loss_after
    console.print(
        f"eval loss {before:.4f} -> {after:.4f} in {outcome.step} steps, {outcome.seconds:.1f} s",
        highlight=False,
    )
    if before is not None and after is not None:
        warning = learning_warning(
            before, after, eval_on_train=outcome.summary.eval_on_train, steps=outcome.step, config=opts.train
        )
        if warning:
            console.print(warning, highlight=False, markup=False)
    assert outcome.adapter is not None
    console.print(f"adapter {opts.name} registered: {outcome.adapter.path}", highlight=False)
    if no_load:
        console.print(f"not loaded (--no-load); load it with: hermesd adapters load {opts.name}")
        return
    result = hot_load(client, opts.name, reload=opts.replace)
    console.print(result.message, highlight=False)
    if result.model_id:
        console.print(f'clients can now use model "{result.model_id}"', highlight=False)


def _seq_cap(opts: TuneOptions) -> int:
    """The longest rows this run could train on: what the plan fits on this machine, at most
    AUTO_MAX_SEQ_LEN (AUTO_MAX_SEQ_LEN itself when the base's shape is unknown here)."""
    from hermesd.runtime.tune.base import resolve_base
    from hermesd.runtime.tune.plan import longest_seq_len
    from hermesd.runtime.tune.shape import shape_of, this_machine

    try:
        spec = resolve_base(opts.base, opts.base_gguf)
        shape = shape_of(spec)
    except HermesdError:  # prepare() says what is wrong with the base
        return AUTO_MAX_SEQ_LEN
    machine = this_machine()
    request = _request(opts, machine, hf_base=spec.kind != "gguf", tokens=None)
    return longest_seq_len(shape, machine, request, upto=AUTO_MAX_SEQ_LEN) or AUTO_MAX_SEQ_LEN


def _hold_to_data_length(prepared: Prepared, opts: TuneOptions, folder: Path) -> tuple[Prepared, int]:
    """Rows held to the default --max-seq-len: long enough for 95 % of them (they were tokenized up to
    the plan's cap); the data summary rewritten to say so."""
    from hermesd.runtime.tune.render import limit_row
    from hermesd.runtime.tune.summary import summarize

    rows = [*prepared.train_rows, *prepared.eval_rows]
    length = choose_max_seq_len([len(r) for r in rows], cap=opts.train.max_seq_len)
    issues = list(prepared.issues)

    def held(part: list[Row]) -> list[Row]:
        out = []
        for row in part:
            kept, issue = limit_row(row, length, opts.length_policy, str(opts.data))
            if kept is not None:
                out.append(kept)
            if issue is not None:
                issues.append(issue)
        return out

    train_rows, eval_rows = held(prepared.train_rows), held(prepared.eval_rows)
    if not train_rows:
        raise NoUsableData(f"{opts.data}: no training row is left after the checks", issues)
    s = prepared.summary
    summary = summarize(s.path, s.lines, s.conversations, train_rows, eval_rows, issues, max_seq_len=length)
    record = summary.to_json() | {"issues": [str(i) for i in issues]}
    (folder / "data_summary.json").write_text(dumps(record), encoding="utf-8")
    return replace(
        prepared, train_rows=train_rows, eval_rows=eval_rows, issues=issues, summary=summary
    ), length


def _request(opts: TuneOptions, machine: Machine, *, hf_base: bool, tokens: int | None) -> PlanRequest:
    """The plan request of a run, for the method the run will use (one choice: choose_method)."""
    from hermesd.runtime.tune.plan import PlanRequest

    cuda = machine.cuda_usable and bool(machine.gpus)
    bnb = _accelerators().bitsandbytes
    method = choose_method(opts.device, opts.method, cuda=cuda, bitsandbytes=bnb, hf_base=hf_base)
    cfg = opts.train
    return PlanRequest(
        rank=cfg.rank,
        targets=cfg.target_modules,
        batch=cfg.batch_size,
        seq_len=cfg.max_seq_len,
        method=method,
        hf_base=hf_base,
        tokens_per_epoch=tokens,
    )


def _check_plan(prepared: Prepared, opts: TuneOptions, folder: Path, console: Console) -> TrainingPlan | None:
    """The plan of this run (the method the device will use, the data's tokens), shown and kept in
    the run folder as plan.json; the caller refuses to train when it does not fit. None when the
    base's shape is unknown (a hub model outside the catalog, with no GGUF)."""
    from hermesd.runtime.tune.plan import plan_training
    from hermesd.runtime.tune.shape import shape_of, this_machine

    try:
        shape = shape_of(prepared.spec)
    except HermesdError as exc:
        console.print(f"plan: not checked ({exc})", highlight=False, markup=False)
        return None
    machine = this_machine()
    tokens = sum(len(r) for r in prepared.train_rows)
    request = _request(opts, machine, hf_base=prepared.spec.kind != "gguf", tokens=tokens)
    gguf = str(prepared.spec.gguf) if prepared.spec.gguf else None
    plan = _timed(
        lambda r: plan_training(shape, machine, r, base=prepared.spec.ref, gguf=gguf), request, opts.state_dir
    )
    (folder / "plan.json").write_text(dumps(plan.to_json()), encoding="utf-8")
    devices = ", ".join(f"GPU {d.index} {gib(d.bytes)}" for d in plan.devices) or "no GPU"
    console.print(
        f"plan: {plan.method}, {devices}, RAM {gib(plan.ram_bytes)}: "
        + ("fits" if plan.fits else "does NOT fit"),
        highlight=False,
        markup=False,
    )
    return plan


def _timed(
    plan: Callable[[PlanRequest], TrainingPlan], request: PlanRequest, state_dir: Path
) -> TrainingPlan:
    """The plan, with the time per epoch from this machine's last run of the same base and method
    when no throughput was stated (runtime/tune/throughput.py)."""
    from hermesd.runtime.tune.throughput import measured_throughput

    first = plan(request)
    if request.tokens_per_s is not None or first.tokens_per_epoch is None:
        return first
    measured = measured_throughput(state_dir / "runs", first.base, first.method)
    if measured is None:
        return first
    timed = plan(replace(request, tokens_per_s=measured.tokens_per_s))
    speed = f"{measured.tokens_per_s:,.0f} tokens/s"
    note = f"time per epoch from {speed}, measured by the run {measured.run!r} here"
    return replace(timed, notes=(*timed.notes, note))


def _refusal(plan: TrainingPlan) -> str:
    fits = "; ".join(plan.suggestions)
    return f"this run does not fit: {plan.reason}" + (f"; would fit: {fits}" if fits else "")


def _show_plan(kw: dict[str, Any], console: Console, state_dir: Path) -> int:
    """Print whether training fits this machine (or --hardware's, for --variant); exit status 0 if
    it does, 1 if not."""
    from hermesd.runtime.hardware import HardwareProfileError, load_profile
    from hermesd.runtime.tune.data import estimate_tokens, load_jsonl
    from hermesd.runtime.tune.plan import PlanRequest, longest_seq_len, plan_training
    from hermesd.runtime.tune.shape import machine_from_hardware, plan_target, this_machine

    try:
        if kw["hardware_file"] is not None:
            machine = machine_from_hardware(load_profile(kw["hardware_file"]), cuda_usable=True)
        else:
            machine = this_machine()
        if kw["device"] == "cpu":
            machine = replace(machine, gpus=())
        served = None if kw["base"] or kw["variant"] else _served_model()
        gpu = bool(machine.gpus) and machine.cuda_usable
        # QLoRA (on a GPU, or asked for) trains a catalog variant on its Hugging Face repo
        qlora = kw["method"] == "qlora-nf4" or (kw["method"] == "auto" and gpu)
        target = plan_target(kw["base"], kw["base_gguf"], kw["variant"], served=served, gpu=qlora)
        if kw["method"] != "auto":  # the run's own check of the choice (bitsandbytes aside: the
            # machine planned for may not be this one)
            choose_method(kw["device"], kw["method"], cuda=gpu, bitsandbytes=True, hf_base=target.hf_base)
        lengths = []
        if kw["data"] is not None:
            lengths = [estimate_tokens(c) for c in load_jsonl(kw["data"]).conversations]
        request = PlanRequest(
            rank=kw["rank"],
            targets=_targets(kw["target_modules"]),
            batch=kw["batch_size"],
            seq_len=kw["max_seq_len"] or TrainConfig.max_seq_len,
            method=None if kw["method"] == "auto" else kw["method"],
            hf_base=target.hf_base,
            tokens_per_epoch=sum(lengths) if lengths else None,
            tokens_per_s=kw["tokens_per_s"],
        )
        if kw["max_seq_len"] is None and lengths:  # as a run would choose it: from the data, capped
            cap = longest_seq_len(target.shape, machine, request, upto=AUTO_MAX_SEQ_LEN)
            request = replace(request, seq_len=choose_max_seq_len(lengths, cap=cap or AUTO_MAX_SEQ_LEN))
        plan = _timed(
            lambda r: plan_training(
                target.shape, machine, r, base=target.base, gguf=target.gguf, alternatives=target.alternatives
            ),
            request,
            state_dir,
        )
    except (HermesdError, HardwareProfileError) as exc:
        fail(str(exc))
    if kw["as_json"]:
        click.echo(json.dumps(plan.to_json(), indent=2))
        return 0 if plan.fits else 1
    shape = target.shape
    size = f"{shape.n_params / 1e9:.2f}B" if shape.n_params >= 1e9 else f"{shape.n_params / 1e6:.2f}M"
    console.print(f"{target.base}: {size} parameters, {shape.layers} layers", highlight=False, markup=False)
    for line in plan.lines():
        console.print(line, highlight=False, markup=False)
    return 0 if plan.fits else 1
