"""A trained peft model -> a GGUF LoRA in the run folder -> an adapter registered in the store."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from hermesd.models.gguf_lora import write_lora_gguf
from hermesd.models.store import AdapterRecord, AdapterStore
from hermesd.runtime.tune.config import TrainConfig

log = logging.getLogger(__name__)

ADAPTER_FILE = "adapter.gguf"


def lora_state(model: Any) -> dict[str, np.ndarray]:
    """peft's LoRA weights as float32 arrays, keyed by peft's names (no adapter-name infix)."""
    from peft import get_peft_model_state_dict

    return {
        k: v.detach().float().cpu().numpy()
        for k, v in get_peft_model_state_dict(model).items()
        if ".lora_A." in k or ".lora_B." in k
    }


def export_adapter(
    model: Any,
    path: Path,
    *,
    arch: str,
    config: TrainConfig,
    name: str,
    base_fingerprint: str | None,
    base_name: str | None,
) -> list[str]:
    return write_lora_gguf(
        path,
        arch=arch,
        config=model.config,
        lora_state=lora_state(model),
        alpha=config.alpha,
        rank=config.rank,
        base_fingerprint=base_fingerprint,
        base_name=base_name,
        name=name,
    )


# the PEFT adapter's files, kept beside adapter.gguf in the store: an upstream server (vLLM's runtime
# LoRA API, `hermesd serve --upstream`) loads these, llama.cpp the GGUF
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


def save_peft(model: Any, folder: Path) -> dict[str, Path]:
    """Write the trained adapter in PEFT's own format (what `hermesd tune` had before the GGUF
    export) into `folder`; returns the store's extra files (name -> path)."""
    model.save_pretrained(str(folder), safe_serialization=True)
    files = {name: folder / name for name in PEFT_FILES}
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing:
        raise RuntimeError(f"peft wrote no {', '.join(missing)} into {folder}")
    return files


def manifest(
    *,
    base_fingerprint: str | None,
    base_path: str,
    base_name: str,
    arch: str,
    config: TrainConfig,
    run_dir: Path,
    metrics: dict[str, Any],
    data: dict[str, Any],
) -> dict[str, Any]:
    return {
        "base": {"fingerprint": base_fingerprint, "path": base_path, "name": base_name},
        "architecture": arch,
        "lora": {"rank": config.rank, "alpha": config.alpha, "target_modules": list(config.target_modules)},
        "training": config.to_json(),
        "metrics": metrics,
        "data": data,
        "run_dir": str(run_dir),
    }


def register(
    store: AdapterStore, name: str, adapter: Path, record: dict[str, Any], *, replace: bool
) -> AdapterRecord:
    entry = store.register(name, adapter, record, replace=replace)
    log.info("registered adapter %s at %s", name, entry.path)
    return entry
