"""LoRA adapters as GGUF: write one from peft weights, read back what it says about itself.

The file is what llama.cpp's `convert_lora_to_gguf.py` produces and what `llama-server --lora`,
`llama_adapter_lora_init` and Ollama's `ADAPTER` read: `general.type = adapter`,
`adapter.type = lora`, `adapter.lora.alpha`, and per adapted weight two tensors,
`<gguf weight name>.lora_a` (rank x in) and `.lora_b` (out x rank). llama.cpp scales the product by
alpha / rank, as peft does, so alpha and rank are stored as trained.

hermesd adds `hermesd.base.fingerprint` (gguf_validate.base_fingerprint) so an adapter is never
applied to a base it was not trained on: llama.cpp only checks tensor shapes, and two models of one
shape would silently accept each other's adapters. Adapters are read back by the validating reader
(gguf_validate), never opened here.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from hermesd.models.gguf_validate import GGUFValidationError, KVValue, validate_gguf
from hermesd.models.gguf_write import GGUFWriteError, hf_to_gguf_name, llama_permute_qk, write_atomically

logger = logging.getLogger(__name__)

KEY_BASE_FINGERPRINT = "hermesd.base.fingerprint"
KEY_BASE_NAME = "hermesd.base.name"
KEY_RANK = "hermesd.lora.rank"
ADAPTER_DTYPES = {"F32": np.float32, "F16": np.float16}

_PEFT_LORA = re.compile(r"\.lora_([AB])(?:\.[A-Za-z0-9_]+)?\.weight$")


class AdapterFileError(ValueError):
    """An adapter file that cannot be written or used; the message names the file and the reason."""


class AdapterBaseMismatch(AdapterFileError):
    """The adapter was trained on another base model."""


@dataclass(frozen=True)
class AdapterInfo:
    path: Path
    architecture: str
    alpha: float
    rank: int | None
    base_fingerprint: str | None
    base_name: str | None
    tensor_count: int


def lora_tensors(
    arch: str, config: Any, lora_state: Mapping[str, np.ndarray]
) -> list[tuple[str, np.ndarray]]:
    """(GGUF name, array) pairs for a peft LoRA state dict, in llama.cpp's layout.

    For llama, q/k rows are permuted into llama.cpp's RoPE layout (gguf_write.llama_permute_qk):
    the B matrix of q_proj/k_proj has the projection's output rows, so it gets the same permutation
    as the base weight; A (input side) does not. qwen3 and seed_oss use NEOX RoPE in llama.cpp, the
    Hugging Face layout: their rows are written as trained.
    """
    n_head = int(_config_value(config, "num_attention_heads") or 0)
    if n_head <= 0:
        raise AdapterFileError("config: field 'num_attention_heads' is missing")
    n_head_kv = int(_config_value(config, "num_key_value_heads") or n_head)
    out: list[tuple[str, np.ndarray]] = []
    for hf_name, value in sorted(lora_state.items()):
        match = _PEFT_LORA.search(hf_name)
        if match is None:
            raise AdapterFileError(f"tensor {hf_name!r} is not a LoRA A/B weight")
        name = hf_to_gguf_name(arch, hf_name)
        data = np.ascontiguousarray(value, dtype=np.float32)
        if data.ndim != 2:
            raise AdapterFileError(f"tensor {hf_name!r}: expected a matrix, got shape {data.shape}")
        if arch == "llama" and match.group(1) == "B":
            if name.startswith("blk.") and ".attn_q." in name:
                data = llama_permute_qk(data, n_head, n_head)
            elif name.startswith("blk.") and ".attn_k." in name:
                data = llama_permute_qk(data, n_head, n_head_kv)
        out.append((name, data))
    _check_pairs(out)
    return out


def _config_value(config: Any, key: str) -> Any:
    """A field of a transformers config object or of a config.json mapping."""
    return config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)


def _check_pairs(tensors: list[tuple[str, np.ndarray]]) -> None:
    by_name = dict(tensors)
    for name, a in tensors:
        if not name.endswith(".lora_a"):
            continue
        b = by_name.get(name[: -len("a")] + "b")
        if b is None:
            raise AdapterFileError(f"{name} has no matching lora_b tensor")
        if a.shape[0] != b.shape[1]:
            raise AdapterFileError(f"{name}: rank {a.shape[0]} of lora_a differs from {b.shape[1]} of lora_b")


def write_lora_gguf(
    path: str | os.PathLike[str],
    *,
    arch: str,
    config: Any,
    lora_state: Mapping[str, np.ndarray],
    alpha: float,
    rank: int,
    base_fingerprint: str | None,
    base_name: str | None = None,
    name: str = "",
    dtype: str = "F32",
) -> list[str]:
    """Write a LoRA adapter GGUF atomically; returns the GGUF tensor names written."""
    if dtype not in ADAPTER_DTYPES:
        raise GGUFWriteError(
            f"adapter dtype {dtype!r} is not supported (supported: {sorted(ADAPTER_DTYPES)})"
        )
    tensors = lora_tensors(arch, config, lora_state)
    if not tensors:
        raise AdapterFileError("the adapter has no LoRA tensors")

    def build(tmp: str) -> gguf.GGUFWriter:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
        writer.add_uint32(KEY_RANK, int(rank))
        if name:
            writer.add_name(name)
        if base_fingerprint:
            writer.add_string(KEY_BASE_FINGERPRINT, base_fingerprint)
        if base_name:
            writer.add_string(KEY_BASE_NAME, base_name)
        for tensor_name, data in tensors:
            writer.add_tensor(tensor_name, data.astype(ADAPTER_DTYPES[dtype]))
        return writer

    write_atomically(path, build)
    logger.info("wrote adapter %s (%s, %d tensors, rank %d, alpha %g)", path, arch, len(tensors), rank, alpha)
    return [n for n, _ in tensors]


def read_adapter_info(path: str | os.PathLike[str]) -> AdapterInfo:
    """What an adapter GGUF says about itself, validated, without llama.cpp. Raises AdapterFileError."""
    p = Path(path)
    try:
        summary = validate_gguf(p, kind="adapter")
    except GGUFValidationError as exc:
        raise AdapterFileError(f"{p}: not a LoRA adapter ({exc.problem})") from None
    kv = summary.kv
    alpha, rank = _number(kv.get(gguf.Keys.Adapter.LORA_ALPHA)), _number(kv.get(KEY_RANK))
    return AdapterInfo(
        path=p,
        architecture=summary.architecture or "",
        alpha=alpha if alpha is not None else 0.0,
        rank=int(rank) if rank is not None else None,
        base_fingerprint=_string(kv.get(KEY_BASE_FINGERPRINT)),
        base_name=_string(kv.get(KEY_BASE_NAME)),
        tensor_count=summary.tensor_count,
    )


def _number(value: KVValue | None) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _string(value: KVValue | None) -> str | None:
    return value if isinstance(value, str) and value else None


def check_adapter_base(
    adapter: AdapterInfo,
    base_fingerprint: str,
    base_label: str = "the served model",
    *,
    required: bool = False,
) -> None:
    """Refuse an adapter trained on another base, before llama.cpp ever sees it.

    An adapter with no recorded fingerprint (made by another tool) is refused when `required` (as
    `hermesd serve` does), else only when its architecture differs; llama.cpp still checks every
    tensor shape when it loads it.
    """
    base_arch = base_fingerprint.rsplit("-", 1)[0]
    if adapter.base_fingerprint is None:
        if required:
            raise AdapterBaseMismatch(
                f"{adapter.path}: the adapter file records no base fingerprint, so nothing says it was "
                f"trained on {base_label} ({base_fingerprint}); train it with hermesd tune on the served "
                "GGUF (--base-gguf for a Hugging Face base)"
            )
        if adapter.architecture and adapter.architecture != base_arch:
            raise AdapterBaseMismatch(
                f"{adapter.path}: adapter is for architecture {adapter.architecture!r}, "
                f"but {base_label} is {base_arch!r}"
            )
        return
    if adapter.base_fingerprint != base_fingerprint:
        trained_on = f" ({adapter.base_name})" if adapter.base_name else ""
        raise AdapterBaseMismatch(
            f"{adapter.path}: adapter was trained on base {adapter.base_fingerprint}{trained_on}, another "
            f"base than {base_label} ({base_fingerprint}); it cannot be loaded onto this model"
        )


def check_adapter_file(
    path: str | os.PathLike[str], base_fingerprint: str, base_label: str = "the served model"
) -> AdapterInfo:
    """Read an adapter GGUF and refuse it unless it belongs to the base with `base_fingerprint`.

    Loaders call this before `llama_adapter_lora_init`: llama.cpp would accept any adapter whose
    tensor shapes happen to match, and gives no reason when it refuses one.
    """
    info = read_adapter_info(path)
    check_adapter_base(info, base_fingerprint, base_label)
    return info
