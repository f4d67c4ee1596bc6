"""The hyper-parameters of a LoRA run, with defaults that work for a few hundred examples."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from hermesd.runtime.tune.base import TuneError

# Every linear layer of a Llama/Qwen 3 block: the attention projections and the MLP.
DEFAULT_TARGETS: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
SUPPORTED_TARGETS = frozenset(DEFAULT_TARGETS)
Schedule = Literal["cosine", "linear", "constant"]

# Fields that may change between an interrupted run and its resumption without changing the result.
_RESUMABLE_FIELDS = frozenset({"save_every", "stop_after"})


@dataclass(frozen=True)
class TrainConfig:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    lr: float = 2e-4
    schedule: Schedule = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    epochs: int = 3
    # One row at a time, four per step: the same effective batch as 4x1, in the memory of one row
    # (a 14B QLoRA at 2048 tokens fits 16 GB this way, not with 4 rows at once).
    batch_size: int = 1
    grad_accum: int = 4
    max_seq_len: int = 2048
    seed: int = 0
    max_steps: int | None = None  # cap on optimizer steps (the schedule is planned for it)
    save_every: int = 50  # optimizer steps between checkpoints
    # Stop after this many steps as if interrupted (checkpoint, no export): for tests and dry runs.
    stop_after: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        checks = [
            (self.rank >= 1, "--rank must be at least 1"),
            (self.alpha > 0, "--alpha must be positive"),
            (0 <= self.dropout < 1, "--dropout must be in [0, 1)"),
            (self.lr > 0, "--lr must be positive"),
            (0 <= self.warmup_ratio < 1, "--warmup-ratio must be in [0, 1)"),
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.grad_accum >= 1, "--grad-accum must be at least 1"),
            (self.max_seq_len >= 16, "--max-seq-len must be at least 16"),
            (self.max_steps is None or self.max_steps >= 1, "--max-steps must be at least 1"),
            (self.save_every >= 1, "--save-every must be at least 1"),
            (bool(self.target_modules), "--target-modules must name at least one module"),
        ]
        for ok, message in checks:
            if not ok:
                raise TuneError(message)
        unknown = sorted(set(self.target_modules) - SUPPORTED_TARGETS)
        if unknown:
            raise TuneError(
                f"--target-modules: {', '.join(unknown)} not supported "
                f"(choose from {', '.join(DEFAULT_TARGETS)})"
            )

    def steps_per_epoch(self, n_rows: int) -> int:
        return max(1, math.ceil(n_rows / (self.batch_size * self.grad_accum)))

    def total_steps(self, n_rows: int) -> int:
        planned = self.epochs * self.steps_per_epoch(n_rows)
        return min(planned, self.max_steps) if self.max_steps else planned

    def warmup_steps(self, n_rows: int) -> int:
        return int(self.warmup_ratio * self.total_steps(n_rows))

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["target_modules"] = list(self.target_modules)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "target_modules" in values:
            values["target_modules"] = tuple(values["target_modules"])
        return cls(**values)


def lr_factor(step: int, total: int, warmup: int, schedule: Schedule) -> float:
    """Multiplier of the peak learning rate before optimizer step `step` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def run_identity(config: TrainConfig, base: str, fingerprint: str | None, data_sha256: str) -> dict[str, Any]:
    """Everything a checkpoint depends on: a resumed run must match it exactly."""
    cfg = {k: v for k, v in config.to_json().items() if k not in _RESUMABLE_FIELDS}
    return {"train": cfg, "base": base, "base_fingerprint": fingerprint, "data_sha256": data_sha256}


def identity_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(saved) | set(now)):
        if key == "train":
            a, b = saved.get("train", {}), now.get("train", {})
            out += [
                f"--{k.replace('_', '-')}: {a.get(k)!r} -> {b.get(k)!r}"
                for k in sorted(set(a) | set(b))
                if a.get(k) != b.get(k)
            ]
        elif saved.get(key) != now.get(key):
            out.append(f"{key}: {saved.get(key)!r} -> {now.get(key)!r}")
    return out


def file_sha256(path: Any) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True)


# -- defaults that fit the data

MIN_OPTIMIZER_STEPS = 50  # fewer steps than this rarely teach an adapter anything (issue 15: 16 steps)
MAX_AUTO_EPOCHS = 20
DEFAULT_GRAD_ACCUM = TrainConfig.grad_accum
DEFAULT_EPOCHS = TrainConfig.epochs
# Eval loss (mean cross-entropy per trained token) above which training rows count as not learned:
# an adapter that learned its data reproduces it at well under this (issue 15: 3.3 not learned,
# 0.18 learned), and at under half the loss it started from.
NOT_LEARNED_ON_TRAIN = 2.0
MIN_DROP_ON_TRAIN = 0.5
MIN_RELATIVE_DROP = 0.10  # on held-out rows


def fit_to_data(
    config: TrainConfig,
    n_rows: int,
    *,
    grad_accum_set: bool,
    epochs_set: bool,
    min_steps: int = MIN_OPTIMIZER_STEPS,
) -> tuple[TrainConfig, list[str]]:
    """Gradient accumulation and epochs for `n_rows` training rows, so a run takes at least
    `min_steps` optimizer steps: first less accumulation (down to 1), then more epochs (up to
    MAX_AUTO_EPOCHS). A value the user set is kept. Returns the config and what was changed, why."""
    notes: list[str] = []
    if config.max_steps is not None:
        return config, notes
    out = config
    if not grad_accum_set:
        accum = out.grad_accum
        while accum > 1 and replace(out, grad_accum=accum).total_steps(n_rows) < min_steps:
            accum //= 2
        if accum != out.grad_accum:
            notes.append(
                f"--grad-accum {accum} (not {out.grad_accum}): {n_rows} training rows would give only "
                f"{out.total_steps(n_rows)} optimizer steps, fewer than {min_steps}"
            )
            out = replace(out, grad_accum=accum)
    if not epochs_set and out.total_steps(n_rows) < min_steps:
        epochs = min(MAX_AUTO_EPOCHS, math.ceil(min_steps / out.steps_per_epoch(n_rows)))
        if epochs > out.epochs:
            notes.append(
                f"--epochs {epochs} (not {out.epochs}): {out.total_steps(n_rows)} optimizer steps would be "
                f"fewer than {min_steps}"
            )
            out = replace(out, epochs=epochs)
    if out.total_steps(n_rows) < min_steps:
        notes.append(
            f"only {out.total_steps(n_rows)} optimizer steps (fewer than {min_steps}): "
            "more training rows would help more than more epochs"
        )
    return out, notes


def describe_steps(config: TrainConfig, n_rows: int) -> str:
    effective = config.batch_size * config.grad_accum
    capped = f", capped by --max-steps {config.max_steps}" if config.max_steps else ""
    return (
        f"effective batch {effective} (--batch-size {config.batch_size} x --grad-accum {config.grad_accum}); "
        f"{config.total_steps(n_rows)} optimizer steps ({config.steps_per_epoch(n_rows)} per epoch x "
        f"{config.epochs} epochs{capped}) on {n_rows} training rows"
    )


def learning_warning(
    before: float, after: float, *, eval_on_train: bool, steps: int, config: TrainConfig
) -> str | None:
    """A warning, with what to change, when the final eval loss says the adapter has not learned the
    data; None when it has. On held-out rows: the loss must fall by MIN_RELATIVE_DROP at least; on the
    training rows themselves (small data, no held-out split): it must halve and end below
    NOT_LEARNED_ON_TRAIN."""
    drop = (before - after) / before if before > 0 else 0.0
    if eval_on_train:
        learned = drop >= MIN_DROP_ON_TRAIN and after <= NOT_LEARNED_ON_TRAIN
    else:
        learned = drop >= MIN_RELATIVE_DROP
    if learned:
        return None
    where = "the training rows" if eval_on_train else "the held-out rows"
    changes = []
    if config.grad_accum > 1:
        changes.append(f"more optimizer steps (now {steps}): --grad-accum 1")
    elif steps < MIN_OPTIMIZER_STEPS:
        changes.append(
            f"more optimizer steps (now {steps}): more --epochs (now {config.epochs}) or more data"
        )
    else:
        changes.append(f"more --epochs (now {config.epochs})")
    changes.append(f"a higher --lr (now {config.lr:g})")
    if config.rank < 16:
        changes.append(f"a higher --rank (now {config.rank})")
    return (
        "warning: the adapter has not learned the data: "
        f"the loss on {where} went {before:.3f} -> {after:.3f} in {steps} optimizer steps. "
        "Try " + ", ".join(changes) + "."
    )
