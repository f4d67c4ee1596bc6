"""The shape of a base model for `tune --plan`, from a GGUF, a config.json, or the catalog."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hermesd.runtime.tune.base import BaseSpec, TuneError, read_base_gguf
from hermesd.runtime.tune.plan import Device, ModelShape

MIB = 1024 * 1024


def shape_from_gguf(path: Path) -> ModelShape:
    summary = read_base_gguf(path)

    def num(key: str, default: int | None = None) -> int:
        value = summary.arch_int(key)
        if value is None:
            value = default
        if value is None:
            raise TuneError(f"{path}: metadata {summary.architecture}.{key} is missing")
        return value

    hidden, heads = num("embedding_length"), num("attention.head_count")
    head_dim = summary.arch_int("attention.key_length") or hidden // heads
    return ModelShape(
        n_params=summary.n_params,
        layers=num("block_count"),
        hidden=hidden,
        intermediate=num("feed_forward_length"),
        vocab=num("vocab_size", summary.token_count or 0),
        q_width=heads * head_dim,
        kv_width=num("attention.head_count_kv", heads) * head_dim,
        tied_embeddings=all(t.name != "output.weight" for t in summary.tensors),
    )


def shape_from_config(config: Mapping[str, Any]) -> ModelShape:
    try:
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        layers, inter, vocab = (
            int(config["num_hidden_layers"]),
            int(config["intermediate_size"]),
            int(config["vocab_size"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TuneError(f"config.json: field {exc} is missing or not a number") from None
    head_dim = int(config.get("head_dim") or hidden // heads)
    kv = int(config.get("num_key_value_heads") or heads)
    tied = bool(config.get("tie_word_embeddings", False))
    per_layer = 2 * hidden * heads * head_dim + 2 * hidden * kv * head_dim + 3 * hidden * inter + 2 * hidden
    n_params = layers * per_layer + vocab * hidden * (1 if tied else 2)
    return ModelShape(n_params, layers, hidden, inter, vocab, heads * head_dim, kv * head_dim, tied)


def shape_of(spec: BaseSpec) -> ModelShape:
    if spec.kind == "gguf":
        return shape_from_gguf(Path(spec.ref))
    if spec.kind == "hf-dir":
        return shape_from_config(json.loads((Path(spec.ref) / "config.json").read_text(encoding="utf-8")))
    from hermesd.models.catalog import load_catalog

    catalog = load_catalog()
    variant = catalog.variant(spec.ref.rsplit("/", 1)[-1])
    if variant is None:
        if spec.gguf is not None:
            return shape_from_gguf(spec.gguf)
        raise TuneError(
            f"--plan: {spec.ref} is not in hermesd's catalog; pass a local GGUF or folder instead "
            "(--plan does not download)"
        )
    return ModelShape(
        n_params=variant.total_params(),
        layers=variant.layers,
        hidden=variant.hidden_size,
        intermediate=variant.intermediate_size,
        vocab=variant.vocab_size,
        q_width=variant.heads * variant.head_dim,
        kv_width=variant.kv_heads * variant.head_dim,
        tied_embeddings=variant.tied_embeddings,
    )


def this_machine() -> tuple[list[Device], bool]:
    """The devices training could use here, and whether torch can drive a CUDA GPU."""
    from hermesd.runtime.hardware import discover

    hw = discover()
    devices = [Device("cuda", f"GPU {g.index} ({g.name})", g.memory_free_mib * MIB) for g in hw.gpus]
    devices.append(Device("cpu", f"CPU ({hw.cpu_cores} cores)", hw.ram_available_mib * MIB))
    try:
        import torch

        cuda = bool(torch.cuda.is_available())
    except ImportError:
        cuda = False
    return devices, cuda
