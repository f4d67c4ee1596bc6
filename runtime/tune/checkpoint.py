"""Checkpoints of a LoRA run: enough to continue exactly where it stopped.

A checkpoint holds the LoRA weights, the optimizer's state, the number of optimizer steps done and
torch's random state (dropout; the CPU's and, when training on CUDA, every GPU's). The data order is
a function of (seed, epoch), so it needs no saving.
Written into a temporary folder and renamed over the previous one: a run killed while saving keeps
the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKPOINT_DIR = "checkpoint"


@dataclass(frozen=True)
class CheckpointState:
    step: int
    identity: dict[str, Any]
    eval_loss_before: float | None


def save_checkpoint(run_dir: Path, model: Any, optimizer: Any, state: CheckpointState) -> Path:
    import torch
    from peft import get_peft_model_state_dict

    final = run_dir / CHECKPOINT_DIR
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=run_dir))
    try:
        lora = {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}
        torch.save(lora, tmp / "lora.pt")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        rng: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():  # dropout on a GPU draws from the GPUs' generators
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, tmp / "rng.pt")
        meta = {"step": state.step, "identity": state.identity, "eval_loss_before": state.eval_loss_before}
        (tmp / "state.json").write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
        for f in tmp.iterdir():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=".old-checkpoint-", dir=run_dir))
            os.replace(final, old / "x")
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_checkpoint_state(run_dir: Path) -> CheckpointState | None:
    path = run_dir / CHECKPOINT_DIR / "state.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return CheckpointState(
        step=int(meta["step"]), identity=meta["identity"], eval_loss_before=meta.get("eval_loss_before")
    )


def load_checkpoint(run_dir: Path, model: Any, optimizer: Any) -> None:
    import torch
    from peft import set_peft_model_state_dict

    folder = run_dir / CHECKPOINT_DIR
    lora = torch.load(folder / "lora.pt", map_location="cpu", weights_only=True)
    set_peft_model_state_dict(model, lora)
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True))
    rng = torch.load(folder / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])


def clear_checkpoint(run_dir: Path) -> None:
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
