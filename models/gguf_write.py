"""What writing a LoRA adapter GGUF needs (gguf_lora), with the PyPI `gguf` package.

llama.cpp's own conversion scripts are not part of the installed wheel, so hermesd carries the
small part of them it needs: Hugging Face -> GGUF tensor names (from `gguf.TensorNameMap`), the
q/k row permutation the Llama converter applies, and an atomic write. Supported architectures:
`llama` (Llama 3.1, Hermes 4 70B/405B), `qwen3` (Hermes 4 14B) and `seed_oss` (Hermes 4.3 36B;
NEOX RoPE like qwen3, so no permutation). Writing whole models (the tests' tiny models) is
tests/fixtures/gguf_model_writer.py.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import gguf
import numpy as np

logger = logging.getLogger(__name__)

ARCHS: dict[str, gguf.MODEL_ARCH] = {
    "llama": gguf.MODEL_ARCH.LLAMA,
    "qwen3": gguf.MODEL_ARCH.QWEN3,
    "seed_oss": gguf.MODEL_ARCH.SEED_OSS,
}

# peft prefixes its module names with these; the base model's names follow.
_PEFT_PREFIXES = ("base_model.model.",)
# peft parameter suffixes -> the GGUF adapter suffix llama.cpp expects after `<name>.weight`.
_LORA_SUFFIX = re.compile(r"\.lora_([AB])(?:\.[A-Za-z0-9_]+)?\.weight$")
_BLOCK = re.compile(r"\.layers\.(\d+)\.")


class GGUFWriteError(ValueError):
    """A model or adapter cannot be written as GGUF; the message names the offending field."""


def arch_of(arch: str) -> gguf.MODEL_ARCH:
    """The `gguf` architecture of a supported architecture name; GGUFWriteError for another."""
    try:
        return ARCHS[arch]
    except KeyError:
        raise GGUFWriteError(f"architecture {arch!r} is not supported (supported: {sorted(ARCHS)})") from None


@lru_cache(maxsize=64)
def _name_map(arch: str, n_blocks: int) -> gguf.TensorNameMap:
    return gguf.get_tensor_name_map(arch_of(arch), n_blocks)


def hf_to_gguf_name(arch: str, hf_name: str) -> str:
    """GGUF tensor name of a Hugging Face parameter, e.g. `model.layers.0.self_attn.q_proj.weight` ->
    `blk.0.attn_q.weight`.

    peft LoRA parameters (`base_model.model.<module>.lora_A[.default].weight`) map to the names
    llama.cpp's adapter loader expects: `<gguf module>.weight.lora_a` / `.lora_b`.
    """
    name = hf_name
    for prefix in _PEFT_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
    lora = _LORA_SUFFIX.search(name)
    if lora:
        name = name[: lora.start()] + ".weight"
    block = _BLOCK.search(name)
    n_blocks = int(block.group(1)) + 1 if block else 1
    mapped = _name_map(arch, n_blocks).get_name(name, try_suffixes=(".weight", ".bias"))
    if mapped is None:
        raise GGUFWriteError(f"tensor {hf_name!r}: no GGUF name for it in architecture {arch!r}")
    if lora:
        mapped += ".lora_" + lora.group(1).lower()
    return mapped


def llama_permute_qk(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """Reorder q/k rows from HF's rotate-half RoPE layout to llama.cpp's interleaved layout.

    The same reshape as llama.cpp's `convert_hf_to_gguf.py` (LlamaModel.permute): within each head,
    the first and second halves of the rows are interleaved. Applies to `q_proj` (n_head) and
    `k_proj` (n_head_kv) weights, and to a LoRA's B matrix of those modules (its rows are outputs).
    """
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    rows = weights.shape[0]
    if rows % (2 * n_head):
        raise GGUFWriteError(f"cannot permute {rows} rows into {n_head} heads")
    return (
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def write_atomically(path: str | os.PathLike[str], writer_for: Any) -> None:
    """Run `writer_for(temp_path) -> GGUFWriter`, write it out, then rename onto `path`.

    The temporary file lives in the target folder so the final `os.replace` is atomic: a reader
    never sees a half-written GGUF, and two writers racing leave one complete file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        writer: gguf.GGUFWriter = writer_for(tmp)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
