"""The LoRA training loop: seeded, resumable, stoppable between steps.

One optimizer step = `grad_accum` micro-batches of `batch_size` rows; the loss is the mean over every
assistant token of the step, so accumulation changes memory, not the result. The order of rows is a
seeded permutation per epoch, a pure function of (seed, epoch): a resumed run replays the same
steps without saving the order. Stopping (Ctrl-C, SIGTERM, `stop_after`) happens between optimizer
steps, after a checkpoint.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hermesd.runtime.tune.checkpoint import CheckpointState, load_checkpoint, save_checkpoint
from hermesd.runtime.tune.config import TrainConfig, lr_factor
from hermesd.runtime.tune.plan import LOSS_CHUNK
from hermesd.runtime.tune.render import Row

log = logging.getLogger(__name__)

IGNORE = -100


@dataclass(frozen=True)
class StepReport:
    step: int  # optimizer steps done
    total: int
    epoch: int
    loss: float
    lr: float
    tokens_per_s: float
    elapsed_s: float


@dataclass(frozen=True)
class TrainResult:
    status: Literal["finished", "stopped"]
    step: int
    total: int
    last_loss: float | None
    seconds: float
    tokens: int


class StopFlag:
    """Set from a signal handler or another thread; the loop stops after the current step."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def set(self, reason: str = "stop requested") -> None:
        self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


def attach_lora(model: Any, config: TrainConfig) -> Any:
    """Wrap a (frozen) base with fresh LoRA weights; A is drawn from torch's RNG, seeded by the caller."""
    from peft import LoraConfig, get_peft_model

    # peft annotates lora_alpha as int but computes with any number; a fractional alpha is legal
    lora_options: dict[str, Any] = {"lora_alpha": config.alpha}
    lora = LoraConfig(
        r=config.rank,
        **lora_options,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # transformers' own deprecation notes, raised inside peft (is_gradient_checkpointing)
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, lora)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    return [int(i) for i in np.random.default_rng([seed, epoch]).permutation(n)]


def step_batches(rows: Sequence[Row], config: TrainConfig) -> Iterator[tuple[int, list[list[Row]]]]:
    """(epoch, micro-batches) per optimizer step, over all epochs (before any max_steps cap)."""
    per_step = config.batch_size * config.grad_accum
    for epoch in range(config.epochs):
        order = epoch_order(len(rows), config.seed, epoch)
        for start in range(0, len(order), per_step):
            chunk = [rows[i] for i in order[start : start + per_step]]
            yield epoch, [chunk[j : j + config.batch_size] for j in range(0, len(chunk), config.batch_size)]


def make_batch(rows: Sequence[Row], pad_id: int, device: Any = "cpu") -> dict[str, Any]:
    """Right-padded ids, attention mask and labels (IGNORE where no loss, i.e. prompts and padding)."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row)
        ids[i, :n] = torch.tensor(row.ids)
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(
            [t if keep else IGNORE for t, keep in zip(row.ids, row.trained, strict=True)]
        )
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def token_loss_sum(model: Any, batch: dict[str, Any], chunk: int = LOSS_CHUNK) -> tuple[Any, int]:
    """Sum of next-token cross-entropy over labelled positions, and how many there were.

    The logits are never whole: vocabulary x tokens of them is gigabytes at long sequences (152k x
    8k tokens is 5 GB in fp32, twice that with the gradient). The decoder runs to its last hidden
    states; only the labelled positions go through the output layer, `chunk` tokens at a time, each
    chunk under activation checkpointing, so its logits are freed after its forward and recomputed
    in the backward pass. The sum and the gradients are those of the whole-logits loss."""
    import torch
    import torch.utils.checkpoint

    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    parts = _decoder_and_head(model)
    if parts is None:  # not a transformers causal LM we can split: the whole logits
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return _logits_loss(logits[:, :-1][keep], targets[keep]), int(keep.sum())
    decoder, head = parts
    hidden = decoder(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state
    # a model split over GPUs ends on the last one, where the labels may not be
    keep, targets = keep.to(hidden.device), targets.to(hidden.device)
    picked, wanted = hidden[:, :-1][keep], targets[keep]
    # starts from the (empty) picked states so that a batch without labels still has a graph to
    # run backward through, as the whole-logits loss had
    total = picked[:0].float().sum()
    for start in range(0, wanted.shape[0], chunk):
        h, t = picked[start : start + chunk], wanted[start : start + chunk]
        if torch.is_grad_enabled():
            total = total + torch.utils.checkpoint.checkpoint(_chunk_loss, head, h, t, use_reentrant=False)
        else:
            total = total + _chunk_loss(head, h, t)
    return total, int(keep.sum())


def _decoder_and_head(model: Any) -> tuple[Any, Any] | None:
    """The decoder (to the final hidden states) and the output layer of a (peft-wrapped)
    transformers causal LM. Hermes' architectures (llama, qwen3, seed_oss) apply nothing between
    the two (no logit scale, no softcapping), so head(decoder(x)) is the model's logits."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    get_decoder, get_head = getattr(base, "get_decoder", None), getattr(base, "get_output_embeddings", None)
    if get_decoder is None or get_head is None:
        return None
    if getattr(base.config, "final_logit_softcapping", None) or getattr(base.config, "logit_scale", None):
        return None
    decoder, head = get_decoder(), get_head()
    if decoder is None or head is None or decoder is base:
        return None
    return decoder, head


def _chunk_loss(head: Any, hidden: Any, targets: Any) -> Any:
    return _logits_loss(head(hidden), targets)


def _logits_loss(logits: Any, targets: Any) -> Any:
    import torch

    # fp32 for the log-softmax: bf16 logits lose the small differences between large values
    return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")


def evaluate(model: Any, rows: Sequence[Row], batch_size: int, pad_id: int, device: Any = "cpu") -> float:
    """Mean loss per assistant token over `rows` (dropout off)."""
    import torch

    if not rows:
        return float("nan")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            loss, n = token_loss_sum(model, make_batch(rows[start : start + batch_size], pad_id, device))
            total += float(loss)
            count += n
    if was_training:
        model.train()
    return total / max(1, count)


def make_optimizer(model: Any, config: TrainConfig) -> Any:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


@dataclass
class TrainLoop:
    model: Any
    optimizer: Any
    rows: Sequence[Row]
    config: TrainConfig
    pad_id: int
    run_dir: Path
    identity: dict[str, Any]
    eval_loss_before: float | None = None
    device: Any = "cpu"
    stop: StopFlag | None = None
    on_step: Callable[[StepReport], None] | None = None

    def resume(self) -> int:
        """Load the run's checkpoint; returns the optimizer steps already done."""
        from hermesd.runtime.tune.checkpoint import read_checkpoint_state

        state = read_checkpoint_state(self.run_dir)
        if state is None:
            return 0
        load_checkpoint(self.run_dir, self.model, self.optimizer)
        self.eval_loss_before = state.eval_loss_before
        log.info("resumed from the checkpoint at step %d", state.step)
        return state.step

    def checkpoint(self, step: int) -> None:
        save_checkpoint(
            self.run_dir,
            self.model,
            self.optimizer,
            CheckpointState(step, self.identity, self.eval_loss_before),
        )
        log.info("checkpoint saved at step %d", step)

    def run(self, start_step: int = 0) -> TrainResult:
        import torch

        cfg = self.config
        total = cfg.total_steps(len(self.rows))
        warmup = cfg.warmup_steps(len(self.rows))
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        t0 = time.monotonic()
        tokens_done, loss_value, step = 0, None, start_step
        for index, (epoch, micro) in enumerate(step_batches(self.rows, cfg)):
            if index >= total:
                break
            if index < start_step:
                continue  # done before the interruption; the order is replayed, not the work
            if self._should_stop(step):
                break
            lr = cfg.lr * lr_factor(step, total, warmup, cfg.schedule)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            batches = [make_batch(m, self.pad_id, self.device) for m in micro]
            n_targets = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches)
            step_loss = 0.0
            for batch in batches:
                loss, _ = token_loss_sum(self.model, batch)
                (loss / max(1, n_targets)).backward()
                step_loss += float(loss.detach())
                tokens_done += int(batch["attention_mask"].sum())
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            self.optimizer.step()
            step += 1
            loss_value = step_loss / max(1, n_targets)
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"the loss became {loss_value} at step {step}; try a lower --lr")
            elapsed = time.monotonic() - t0
            report = StepReport(step, total, epoch, loss_value, lr, tokens_done / max(elapsed, 1e-9), elapsed)
            log.info(
                "step %d/%d epoch %d loss %.4f lr %.2e %.0f tok/s",
                step,
                total,
                epoch + 1,
                loss_value,
                lr,
                report.tokens_per_s,
            )
            if self.on_step is not None:
                self.on_step(report)
            if step % cfg.save_every == 0 and step < total:
                self.checkpoint(step)
        seconds = time.monotonic() - t0
        if step < total:
            if step > 0:  # stopped before any step: nothing worth resuming
                self.checkpoint(step)
            return TrainResult("stopped", step, total, loss_value, seconds, tokens_done)
        return TrainResult("finished", step, total, loss_value, seconds, tokens_done)

    def _should_stop(self, step: int) -> bool:
        if self.stop is not None and self.stop.is_set():
            log.info("stopping at step %d: %s", step, self.stop.reason)
            return True
        stop_after = self.config.stop_after
        if stop_after is not None and step >= stop_after:
            log.info("stopping at step %d (stop_after)", step)
            return True
        return False
