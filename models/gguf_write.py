"""Write GGUF files (models now, LoRA adapters later) with the PyPI `gguf` package.

llama.cpp's own conversion scripts are not part of the installed wheel, so hermesd carries the
small part of them it needs: Hugging Face -> GGUF tensor names (from `gguf.TensorNameMap`), the
q/k row permutation the Llama converter applies, the architecture key/values read from a
transformers config, and a byte-level BPE vocabulary. Supported architectures: `llama`, `qwen3`.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import gguf
import numpy as np

logger = logging.getLogger(__name__)

ARCHS: dict[str, gguf.MODEL_ARCH] = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen3": gguf.MODEL_ARCH.QWEN3}
QUANTS: dict[str, gguf.GGMLQuantizationType] = {
    "F32": gguf.GGMLQuantizationType.F32,
    "F16": gguf.GGMLQuantizationType.F16,
    "Q8_0": gguf.GGMLQuantizationType.Q8_0,
}
FILE_TYPES: dict[str, gguf.LlamaFileType] = {
    "F32": gguf.LlamaFileType.ALL_F32,
    "F16": gguf.LlamaFileType.MOSTLY_F16,
    "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}

# peft prefixes its module names with these; the base model's names follow.
_PEFT_PREFIXES = ("base_model.model.",)
# peft parameter suffixes -> the GGUF adapter suffix llama.cpp expects after `<name>.weight`.
_LORA_SUFFIX = re.compile(r"\.lora_([AB])(?:\.[A-Za-z0-9_]+)?\.weight$")
_BLOCK = re.compile(r"\.layers\.(\d+)\.")
# HF buffers/parameters that have no GGUF tensor (recomputed by llama.cpp).
_SKIPPED = re.compile(r"(rotary_emb\.inv_freq|\.rotary_emb\.)")


class GGUFWriteError(ValueError):
    """A model or adapter cannot be written as GGUF; the message names the offending field."""


@dataclass(frozen=True)
class TokenizerSpec:
    """A byte-level BPE vocabulary as llama.cpp reads it (`tokenizer.ggml.*`)."""

    tokens: Sequence[str]
    token_types: Sequence[int]  # gguf.TokenType values, one per token
    merges: Sequence[str]  # "left right", byte-level alphabet, rank order
    bos_id: int | None = None
    eos_id: int | None = None
    eot_id: int | None = None
    pad_id: int | None = None
    add_bos: bool = False
    add_eos: bool = False
    model: str = "gpt2"
    # Selects llama.cpp's pre-tokenizer regex; "gpt-2" is the regex of tokenizers' ByteLevel(use_regex=True).
    pre: str = "gpt-2"


def bpe_tokenizer_spec(
    tokenizer_json: Mapping[str, Any],
    *,
    bos: str | None,
    eos: str | None,
    eot: str | None = None,
    pad: str | None = None,
    add_bos: bool = False,
    pre: str = "gpt-2",
) -> TokenizerSpec:
    """Build a TokenizerSpec from a parsed `tokenizer.json` of a byte-level BPE tokenizer.

    Added tokens marked `special` become CONTROL (hidden when detokenized, matched only when the
    caller asks to parse special tokens); other added tokens become USER_DEFINED (always matched and
    always shown), which is how llama.cpp's converter treats `<think>` and `<tool_call>`.
    """
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE":
        raise GGUFWriteError(f"tokenizer.json: model.type is {model.get('type')!r}, expected 'BPE'")
    vocab: dict[str, int] = dict(model["vocab"])
    types: dict[int, int] = {}
    for added in tokenizer_json.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
        types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    size = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    token_types = [int(gguf.TokenType.UNUSED)] * size
    for text, idx in vocab.items():
        tokens[idx] = text
        token_types[idx] = int(types.get(idx, gguf.TokenType.NORMAL))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    def _id(name: str | None, what: str) -> int | None:
        if name is None:
            return None
        if name not in vocab:
            raise GGUFWriteError(f"tokenizer.json: {what} token {name!r} is not in the vocabulary")
        return vocab[name]

    return TokenizerSpec(
        tokens=tokens,
        token_types=token_types,
        merges=merges,
        bos_id=_id(bos, "bos"),
        eos_id=_id(eos, "eos"),
        eot_id=_id(eot, "eot"),
        pad_id=_id(pad, "pad"),
        add_bos=add_bos,
        pre=pre,
    )


def _arch(arch: str) -> gguf.MODEL_ARCH:
    try:
        return ARCHS[arch]
    except KeyError:
        raise GGUFWriteError(f"architecture {arch!r} is not supported (supported: {sorted(ARCHS)})") from None


@lru_cache(maxsize=64)
def _name_map(arch: str, n_blocks: int) -> gguf.TensorNameMap:
    return gguf.get_tensor_name_map(_arch(arch), n_blocks)


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


def llama_unpermute_qk(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """Inverse of `llama_permute_qk` (GGUF layout back to HF layout)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, rows // n_head // 2, 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def config_value(config: Any, key: str, default: Any = None) -> Any:
    """Read a field from a transformers config object or a plain mapping (config.json)."""
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def config_required(config: Any, key: str) -> Any:
    """Like `config_value`, but a missing field is a GGUFWriteError naming it."""
    value = config_value(config, key)
    if value is None:
        raise GGUFWriteError(f"config: field {key!r} is missing")
    return value


# Old private names, still imported by models/gguf_lora.py.
_cfg = config_value
_required = config_required


def _rope_theta(config: Any) -> float:
    # transformers 5 moved rope_theta into `rope_parameters`; config.json files of older models
    # keep it at the top level.
    params = config_value(config, "rope_parameters") or {}
    theta = params.get("rope_theta") if isinstance(params, Mapping) else None
    return float(theta if theta is not None else config_value(config, "rope_theta", 10000.0))


def head_dim(config: Any) -> int:
    """The per-head size: explicit `head_dim` (qwen3) or hidden_size / num_attention_heads."""
    explicit = config_value(config, "head_dim")
    if explicit:
        return int(explicit)
    return int(config_required(config, "hidden_size")) // int(config_required(config, "num_attention_heads"))


def add_arch_kv(writer: gguf.GGUFWriter, arch: str, config: Any) -> None:
    """Write `<arch>.*` hyper-parameters from a transformers config (object or config.json mapping)."""
    _arch(arch)
    n_head = int(config_required(config, "num_attention_heads"))
    dim = head_dim(config)
    writer.add_context_length(int(config_required(config, "max_position_embeddings")))
    writer.add_embedding_length(int(config_required(config, "hidden_size")))
    writer.add_block_count(int(config_required(config, "num_hidden_layers")))
    writer.add_feed_forward_length(int(config_required(config, "intermediate_size")))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(int(config_value(config, "num_key_value_heads") or n_head))
    writer.add_layer_norm_rms_eps(float(config_required(config, "rms_norm_eps")))
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_rope_dimension_count(dim)
    # Explicit head sizes: required where head_dim != hidden/heads (qwen3), harmless elsewhere.
    writer.add_key_length(dim)
    writer.add_value_length(dim)
    writer.add_vocab_size(int(config_required(config, "vocab_size")))


def add_tokenizer_kv(writer: gguf.GGUFWriter, tokenizer: TokenizerSpec) -> None:
    """Write the `tokenizer.ggml.*` key/values of a BPE vocabulary."""
    if len(tokenizer.tokens) != len(tokenizer.token_types):
        raise GGUFWriteError(
            f"tokenizer: {len(tokenizer.tokens)} tokens but {len(tokenizer.token_types)} token types"
        )
    writer.add_tokenizer_model(tokenizer.model)
    writer.add_tokenizer_pre(tokenizer.pre)
    writer.add_token_list(list(tokenizer.tokens))
    writer.add_token_types([int(t) for t in tokenizer.token_types])
    writer.add_token_merges(list(tokenizer.merges))
    for value, add in (
        (tokenizer.bos_id, writer.add_bos_token_id),
        (tokenizer.eos_id, writer.add_eos_token_id),
        (tokenizer.eot_id, writer.add_eot_token_id),
        (tokenizer.pad_id, writer.add_pad_token_id),
    ):
        if value is not None:
            add(value)
    writer.add_add_bos_token(tokenizer.add_bos)
    writer.add_add_eos_token(tokenizer.add_eos)


def gguf_tensors(
    arch: str, config: Any, state_dict: Mapping[str, np.ndarray]
) -> Iterator[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array in GGUF layout) for each weight of a HF state dict."""
    n_head = int(config_required(config, "num_attention_heads"))
    n_head_kv = int(config_value(config, "num_key_value_heads") or n_head)
    tied = bool(config_value(config, "tie_word_embeddings", False))
    for hf_name, value in state_dict.items():
        if _SKIPPED.search(hf_name) or (tied and hf_name.endswith("lm_head.weight")):
            continue
        name = hf_to_gguf_name(arch, hf_name)
        data = np.ascontiguousarray(value, dtype=np.float32)
        if arch == "llama" and name.endswith("attn_q.weight"):
            data = llama_permute_qk(data, n_head, n_head)
        elif arch == "llama" and name.endswith("attn_k.weight"):
            data = llama_permute_qk(data, n_head, n_head_kv)
        yield name, data


def encode_tensor(data: np.ndarray, quant: str) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """Encode a float32 tensor for the file: 1-D tensors (norms) stay F32, as llama.cpp's converter
    keeps them; rows that Q8_0's 32-wide blocks do not divide fall back to F16."""
    qtype = QUANTS.get(quant)
    if qtype is None:
        raise GGUFWriteError(f"quant {quant!r} is not supported (supported: {sorted(QUANTS)})")
    if data.ndim < 2 or qtype == gguf.GGMLQuantizationType.F32:
        return data.astype(np.float32), gguf.GGMLQuantizationType.F32
    if qtype == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % 32:
        logger.info("row length %d is not a multiple of 32; writing F16 instead of Q8_0", data.shape[-1])
        qtype = gguf.GGMLQuantizationType.F16
    if qtype == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16), qtype
    return gguf.quants.quantize(data, qtype), qtype


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


def write_model_gguf(
    path: str | os.PathLike[str],
    *,
    arch: str,
    config: Any,
    state_dict: Mapping[str, np.ndarray],
    tokenizer: TokenizerSpec,
    name: str,
    basename: str | None = None,
    quant: str = "F32",
    chat_template: str | None = None,
) -> None:
    """Write a complete model GGUF (metadata, vocabulary, weights) atomically to `path`.

    `config` is a transformers config object or its config.json mapping; `state_dict` maps HF
    parameter names to arrays. An empty `state_dict` writes a vocabulary/metadata-only file (enough
    for llama.cpp's `vocab_only` loading).
    """
    encoded = [(n, *encode_tensor(t, quant)) for n, t in gguf_tensors(arch, config, state_dict)]

    def build(tmp: str) -> gguf.GGUFWriter:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name)
        if basename:
            writer.add_basename(basename)
        writer.add_file_type(FILE_TYPES[quant])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        add_arch_kv(writer, arch, config)
        add_tokenizer_kv(writer, tokenizer)
        if chat_template is not None:
            writer.add_chat_template(chat_template)
        for tensor_name, data, qtype in encoded:
            writer.add_tensor(tensor_name, data, raw_dtype=qtype if data.dtype == np.uint8 else None)
        return writer

    write_atomically(path, build)
    logger.info("wrote %s (%s, %s, %d tensors)", path, arch, quant, len(encoded))
