"""Retrying a model load with fewer GPU layers when the planner's offload was too optimistic.

Pure: the loader is passed in, so the policy is tested without a GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from hermesd.runtime.engine.load_report import OffloadError
from hermesd.runtime.errors import DraftVocabMismatch, ModelLoadError

log = logging.getLogger(__name__)
T = TypeVar("T")


def fewer_layers(requested: int, total: int) -> list[int]:
    """The offloads to try after `requested` failed: 3/4, 1/2, 1/4 of the layers, then CPU only."""
    start = total if requested < 0 or requested > total else requested
    steps = [start * 3 // 4, start // 2, start // 4, 0]
    out: list[int] = []
    for n in steps:
        if n < start and n not in out:
            out.append(n)
    return out


def load_with_fallback(
    load: Callable[[int], T], *, gpu_layers: int, total_layers: int, gpu_available: bool
) -> T:
    try:
        return load(gpu_layers)
    except (OffloadError, DraftVocabMismatch):
        # layers that should be on a GPU landed on the CPU, or a draft model with another
        # vocabulary: fewer layers would not fix either
        raise
    except ModelLoadError as first:
        if not gpu_available or gpu_layers == 0 or total_layers <= 0:
            raise
        error = first
    for n in fewer_layers(gpu_layers, total_layers):
        log.warning(
            "loading with %s GPU layers failed (%s); retrying with %d of %d layers on the GPU",
            "all" if gpu_layers < 0 else gpu_layers,
            error,
            n,
            total_layers,
        )
        try:
            engine = load(n)
        except ModelLoadError as exc:
            error = exc
            continue
        log.warning("model loaded with %d of %d layers on the GPU (the rest on the CPU)", n, total_layers)
        return engine
    raise error
