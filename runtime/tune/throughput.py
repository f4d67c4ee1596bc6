"""The training throughput this machine measured, for the plan's time per epoch.

Every finished or stopped run keeps its tokens/s in `<state>/runs/<name>/metrics.json`, beside the
base and method it trained with (config.json). A later `tune --plan` (or the plan `tune` checks) for
the same base and method uses the latest such figure, so "one epoch: N tokens, T" is this machine's
own number. There is no catalogue of training speeds per GPU: a figure nobody measured would be a
guess, so without a run (or `--tokens-per-s`) the time stays unknown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measured:
    tokens_per_s: float
    run: str  # the run folder's name


def measured_throughput(runs_dir: Path, base: str, method: str) -> Measured | None:
    """The latest tokens/s of a run in `runs_dir` that trained `base` with `method`, or None."""
    latest: tuple[float, Measured] | None = None
    for config_path in runs_dir.glob("*/config.json"):
        metrics_path = config_path.parent / "metrics.json"
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
            when = metrics_path.stat().st_mtime
        except (OSError, ValueError):
            continue
        if not isinstance(config, dict) or not isinstance(metrics, dict):
            continue
        same_base = (config.get("base") or {}).get("ref") == base
        same_method = (config.get("device") or {}).get("method") == method
        speed = metrics.get("tokens_per_s")
        if not (same_base and same_method and isinstance(speed, int | float) and speed > 0):
            continue
        if latest is None or when > latest[0]:
            latest = (when, Measured(float(speed), config_path.parent.name))
    return latest[1] if latest else None
