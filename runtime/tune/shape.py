"""The shape of a base model for `tune --plan`, from a GGUF (every part of a split one), a
config.json, or the catalog; and the machine the plan is for (this one, or a --hardware profile)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hermesd.models.catalog import Variant
from hermesd.models.gguf_split import SplitSetIncomplete, shard_paths
from hermesd.runtime.hardware import Hardware
from hermesd.runtime.tune.base import BaseSpec, TuneError, read_base_gguf
from hermesd.runtime.tune.plan import Alternative, Gpu, Machine, ModelShape

MIB = 1024 * 1024


def shape_from_gguf(path: Path) -> ModelShape:
    """From any part of a split GGUF: the reader is given part 1 and counts the tensors of all."""
    try:
        summary = read_base_gguf(shard_paths(path)[0])
    except SplitSetIncomplete as exc:
        raise TuneError(str(exc)) from None

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
    if spec.gguf is not None:  # the pairing check makes it the same network as the hub repo
        return shape_from_gguf(spec.gguf)
    from hermesd.models.catalog import load_catalog

    catalog = load_catalog()
    variant = catalog.variant(spec.ref.rsplit("/", 1)[-1])
    if variant is None:
        variant = next((v for v in catalog.variants if v.hf_repo.lower() == spec.ref.lower()), None)
    if variant is None:
        raise TuneError(
            f"--plan: {spec.ref} is not in hermesd's catalog; pass a local GGUF or folder instead "
            "(--plan does not download)"
        )
    return shape_from_variant(variant)


def shape_from_variant(variant: Variant) -> ModelShape:
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


def machine_from_hardware(
    hw: Hardware, cuda_usable: bool, torch_uuids: Sequence[str] | None = None
) -> Machine:
    """The training machine of a hardware description. `torch_uuids` (torch's GPUs, in its order)
    renumbers the GPUs as torch numbers them, for the device map: NVML counts every GPU in PCI
    order, torch only those CUDA_VISIBLE_DEVICES leaves, in CUDA's order."""
    gpus = tuple(Gpu(g.index, g.name, g.memory_free_mib * MIB) for g in hw.gpus)
    if torch_uuids is not None:
        gpus = torch_numbering(hw, torch_uuids) or gpus
    return Machine(gpus, hw.ram_available_mib * MIB, cuda_usable, hw.source)


def torch_numbering(hw: Hardware, torch_uuids: Sequence[str]) -> tuple[Gpu, ...] | None:
    """hw's GPUs that torch sees, numbered by torch's ordinals (matched by UUID); None when a UUID
    is missing on either side, and NVML's numbering has to do."""

    def bare(uuid: str | None) -> str:
        return (uuid or "").lower().removeprefix("gpu-")

    by_uuid = {bare(g.uuid): g for g in hw.gpus if g.uuid}
    if not torch_uuids or any(bare(u) not in by_uuid for u in torch_uuids):
        return None
    return tuple(
        Gpu(ordinal, by_uuid[bare(u)].name, by_uuid[bare(u)].memory_free_mib * MIB)
        for ordinal, u in enumerate(torch_uuids)
    )


def this_machine() -> Machine:
    """The devices training could use here, numbered as torch numbers them, and whether torch can
    drive a CUDA GPU."""
    from hermesd.runtime.hardware import discover

    try:
        import torch

        cuda = bool(torch.cuda.is_available())
        uuids = [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]
    except (ImportError, RuntimeError, AttributeError):
        cuda, uuids = False, []
    return machine_from_hardware(discover(), cuda, uuids if cuda else None)


@dataclass(frozen=True)
class PlanTarget:
    """What a training plan is for: the shape, the base trained on, the GGUF the adapter is for."""

    shape: ModelShape
    base: str
    gguf: str | None
    hf_base: bool  # the base is Hugging Face safetensors (QLoRA on CUDA), not a dequantized GGUF
    alternatives: tuple[Alternative, ...]


def plan_target(
    base: str | None, base_gguf: Path | None, variant_ref: str | None, *, served: str | None, gpu: bool
) -> PlanTarget:
    """`--variant` (a catalog variant: its Hugging Face repo on a GPU, else its usual GGUF), else
    `--base`, else the served GGUF. With a usable GPU and no --base, a served GGUF that is a catalog
    variant is trained as QLoRA on that variant's Hugging Face repo, the adapter written for the GGUF."""
    from hermesd.models.catalog import load_catalog

    catalog = load_catalog()
    alternatives = tuple(
        Alternative(v.name, v.hf_repo or v.id, shape_from_variant(v))
        for v in sorted(catalog.variants, key=lambda v: -v.size_rank)
    )
    if variant_ref is not None:
        variant = catalog.variant(variant_ref)
        if variant is None:
            known = ", ".join(v.id for v in catalog.variants)
            raise TuneError(f"--variant {variant_ref}: not in the catalog (known: {known})")
        quant = variant.quant("Q4_K_M") or (variant.quants[0] if variant.quants else None)
        gguf = quant.file_ids()[0] if quant else None
        shape = shape_from_variant(variant)
        if gpu and variant.hf_repo:
            return PlanTarget(shape, variant.hf_repo, gguf, True, alternatives)
        return PlanTarget(shape, gguf or variant.id, gguf, False, alternatives)  # the dequantized GGUF
    ref = base or served
    if ref is None:
        raise TuneError("no --base, no --variant and no served model (HERMESD_MODEL) to plan for")
    from hermesd.runtime.tune.base import resolve_base

    spec = resolve_base(ref, base_gguf)
    if spec.kind != "gguf":
        gguf = str(spec.gguf) if spec.gguf else None
        return PlanTarget(shape_of(spec), spec.ref, gguf, True, alternatives)
    shape = shape_from_gguf(Path(spec.ref))
    repo = catalog_repo_of(Path(spec.ref)) if base is None and gpu else None
    if repo is not None:
        return PlanTarget(shape, repo, spec.ref, True, alternatives)
    return PlanTarget(shape, spec.ref, str(spec.gguf), False, alternatives)


def catalog_repo_of(gguf: Path) -> str | None:
    """The Hugging Face repo of the catalog variant a GGUF is (by file name, else architecture and
    layer count): what QLoRA trains on for it. None for a file the catalog does not know."""
    from hermesd.models.catalog import CatalogError, load_catalog

    try:
        summary = read_base_gguf(shard_paths(gguf)[0])
        catalog = load_catalog()
    except (SplitSetIncomplete, CatalogError) as exc:
        raise TuneError(str(exc)) from None
    variant = catalog.variant_of_file(gguf.name, summary.architecture or "", summary.arch_int("block_count"))
    return variant.hf_repo if variant is not None and variant.hf_repo else None
