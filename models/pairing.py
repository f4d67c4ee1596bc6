"""Are a GGUF and a Hugging Face model the same network? Compared from metadata only.

`hermesd tune` trains on Hugging Face weights (safetensors, loaded in 4 bits) and writes the adapter
for the GGUF the daemon serves. That is right only when both are one network: the same architecture
and shapes, the same vocabulary (every token's text, and which tokens are special) and the same
positions (RoPE base, and Llama 3.1's `rope_scaling: llama3`, which llama.cpp's converter writes as
the factors of a `rope_freqs.weight` tensor). The GGUF side comes from the validating reader
(`gguf_validate`), the Hugging Face side from config.json and tokenizer.json, so the check runs
before any weight is downloaded or loaded.

The rules mirror llama.cpp's converter (`convert_hf_to_gguf.py`, `get_vocab_base`): ids the
tokenizer does not use become `[PAD<id>]` up to config.json's `vocab_size`; an added token is a
control (special) token when the tokenizer marks it special or it looks special (`<|...|>`); the
ids of bos/eos are not compared, since GGUF publishers routinely set eos to the end-of-turn token.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import TokenType

from hermesd.models.gguf_validate import GGUFSummary, read_vocabulary, validate_gguf

# config.json `model_type` -> GGUF `general.architecture`, where they differ.
_GGUF_ARCH = {"mistral": "llama"}
RELATIVE_TOLERANCE = 1e-4  # rope factors: float32 in the GGUF, recomputed in float64 here


class PairingError(ValueError):
    """The two models are not the same network; str() is one line naming the first difference."""


@dataclass(frozen=True)
class NetworkFacts:
    """What two files of one network must agree on. None: the file does not say (not compared)."""

    architecture: str
    layers: int | None
    hidden: int | None
    heads: int | None
    kv_heads: int | None
    head_dim: int | None
    vocab_size: int | None
    tokens: tuple[str, ...] | None  # by id; unused ids as "[PAD<id>]"
    special: frozenset[int] | None  # ids of control tokens
    rope_theta: float | None
    rope_scaling: str  # "none", "llama3", "linear", "yarn", ...
    rope_factor: float | None  # linear/yarn factor
    rope_freqs: tuple[float, ...] | None  # per-frequency factors (llama3)


# -- the GGUF side


def gguf_facts(path: Path | str) -> NetworkFacts:
    summary = validate_gguf(path, kind="model")
    vocab = read_vocabulary(path)
    special = None
    if vocab.token_types is not None:
        special = frozenset(i for i, t in enumerate(vocab.token_types) if t == TokenType.CONTROL)
    return _gguf_numbers(summary, vocab.tokens or None, special, vocab.rope_freqs)


def _gguf_numbers(
    summary: GGUFSummary,
    tokens: tuple[str, ...] | None,
    special: frozenset[int] | None,
    rope_freqs: tuple[float, ...] | None,
) -> NetworkFacts:
    num = summary.arch_int
    hidden, heads = num("embedding_length"), num("attention.head_count")
    head_dim = num("attention.key_length") or (hidden // heads if hidden and heads else None)
    theta = summary.arch_value("rope.freq_base")
    scaling = summary.arch_value("rope.scaling.type")
    factor = summary.arch_value("rope.scaling.factor")
    kind = scaling if isinstance(scaling, str) and scaling != "none" else "none"
    if rope_freqs is not None:
        kind = "llama3"
    return NetworkFacts(
        architecture=summary.architecture or "",
        layers=num("block_count"),
        hidden=hidden,
        heads=heads,
        kv_heads=num("attention.head_count_kv") or heads,
        head_dim=head_dim,
        vocab_size=summary.token_count or num("vocab_size"),
        tokens=tokens,
        special=special,
        rope_theta=float(theta) if isinstance(theta, int | float) else 10000.0,
        rope_scaling=kind,
        rope_factor=float(factor) if isinstance(factor, int | float) and kind in ("linear", "yarn") else None,
        rope_freqs=rope_freqs,
    )


# -- the Hugging Face side


def hf_facts_from_folder(folder: Path) -> NetworkFacts:
    """From `folder`/config.json and `folder`/tokenizer.json (the tokenizer is optional)."""
    config = _read_json(folder / "config.json")
    tokenizer = folder / "tokenizer.json"
    return hf_facts(config, _read_json(tokenizer) if tokenizer.is_file() else None)


def hf_facts(config: Mapping[str, Any], tokenizer_json: Mapping[str, Any] | None) -> NetworkFacts:
    text = config.get("text_config")
    if isinstance(text, Mapping):  # multimodal wrappers keep the language model's numbers inside
        config = {**config, **text}
    model_type = str(config.get("model_type") or "")
    hidden, heads = _int(config, "hidden_size"), _int(config, "num_attention_heads")
    head_dim = _int(config, "head_dim") or (hidden // heads if hidden and heads else None)
    vocab_size = _int(config, "vocab_size")
    rope = rope_parameters(config)
    theta = float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0)
    kind = str(rope.get("rope_type") or rope.get("type") or "default")
    kind = "none" if kind == "default" else kind
    freqs = llama3_factors(rope, theta, head_dim) if kind == "llama3" and head_dim else None
    factor = rope.get("factor")
    tokens, special = _hf_vocabulary(tokenizer_json, vocab_size) if tokenizer_json else (None, None)
    return NetworkFacts(
        architecture=_GGUF_ARCH.get(model_type, model_type),
        layers=_int(config, "num_hidden_layers"),
        hidden=hidden,
        heads=heads,
        kv_heads=_int(config, "num_key_value_heads") or heads,
        head_dim=head_dim,
        vocab_size=vocab_size,
        tokens=tokens,
        special=special,
        rope_theta=theta,
        rope_scaling=kind,
        rope_factor=float(factor) if isinstance(factor, int | float) and kind in ("linear", "yarn") else None,
        rope_freqs=freqs,
    )


def rope_parameters(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """transformers 5 writes `rope_parameters` (theta and scaling together); older config.json files
    `rope_theta` and `rope_scaling`. Either gives one mapping here."""
    params = config.get("rope_parameters")
    if isinstance(params, Mapping):
        inner = params.get("full_attention")
        return inner if isinstance(inner, Mapping) else params
    scaling = config.get("rope_scaling")
    out = dict(scaling) if isinstance(scaling, Mapping) else {}
    if config.get("rope_theta") is not None:
        out["rope_theta"] = config["rope_theta"]
    return out


def llama3_factors(rope: Mapping[str, Any], theta: float, dim: int) -> tuple[float, ...]:
    """The per-frequency factors llama.cpp's converter stores for `rope_type: llama3`."""
    factor = float(rope.get("factor", 8.0))
    low = float(rope.get("low_freq_factor", 1.0))
    high = float(rope.get("high_freq_factor", 4.0))
    old = float(rope.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old / low, old / high
    out = []
    for i in range(0, dim, 2):
        wavelen = 2 * math.pi / (1.0 / theta ** (i / dim))
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return tuple(out)


# The (low_freq_factor, high_freq_factor) pairs and original contexts tried by llama3_parameters:
# Llama 3.1/3.2's (1, 4) and 8192 first, then what other llama3-scaled models use.
_LLAMA3_LOW_HIGH = ((1.0, 4.0), (1.0, 2.0), (1.0, 8.0), (2.0, 8.0))
_LLAMA3_CONTEXTS = (8192, *(2**k for k in range(4, 21) if 2**k != 8192))


def llama3_parameters(factors: Sequence[float], theta: float, dim: int) -> dict[str, Any] | None:
    """`rope_type: llama3` parameters whose per-frequency factors (llama3_factors) are `factors`, or
    None when none of the candidates reproduces them.

    A GGUF stores only the factors, and different parameter sets can give the same factors at a
    model's frequencies; any one that reproduces all of them makes transformers compute the same
    positions, so the first match is returned. The scaling factor is the largest stored factor (the
    lowest frequencies are divided by it); the rest is searched among the values models use.
    """
    if len(factors) != dim // 2 or not factors:
        return None
    factor = float(max(factors))
    for low, high in _LLAMA3_LOW_HIGH:
        for old in _LLAMA3_CONTEXTS:
            rope = {
                "rope_type": "llama3",
                "rope_theta": float(theta),
                "factor": factor,
                "low_freq_factor": low,
                "high_freq_factor": high,
                "original_max_position_embeddings": old,
            }
            computed = llama3_factors(rope, theta, dim)
            if all(
                math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE) for a, b in zip(factors, computed, strict=True)
            ):
                return rope
    return None


def _hf_vocabulary(
    tokenizer_json: Mapping[str, Any], vocab_size: int | None
) -> tuple[tuple[str, ...] | None, frozenset[int] | None]:
    model = tokenizer_json.get("model")
    vocab = model.get("vocab") if isinstance(model, Mapping) else None
    if not isinstance(vocab, Mapping):  # a Unigram (sentencepiece) list: not compared here
        return None, None
    by_id: dict[int, str] = {int(i): str(t) for t, i in vocab.items()}
    special: set[int] = set()
    for added in tokenizer_json.get("added_tokens") or ():
        tid, text = int(added["id"]), str(added["content"])
        if added.get("special") or looks_special(text):
            special.add(tid)
        else:
            text = text.replace("\u2581", " ")  # the converter pre-normalizes user-defined spaces
        by_id[tid] = text
    size = max(vocab_size or 0, max(by_id, default=-1) + 1)
    return tuple(by_id.get(i, f"[PAD{i}]") for i in range(size)), frozenset(special)


def looks_special(text: str) -> bool:
    """llama.cpp's converter's `does_token_look_special`: tokens it makes control tokens even when
    the tokenizer does not mark them special."""
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<\uff5c") and text.endswith("\uff5c>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )


# -- the comparison


def first_difference(gguf: NetworkFacts, hf: NetworkFacts) -> str | None:
    """The first thing that differs, as a phrase (GGUF value first), or None when they agree."""
    numbers: Sequence[tuple[str, Any, Any]] = (
        ("architecture", gguf.architecture, hf.architecture),
        ("layer count", gguf.layers, hf.layers),
        ("hidden size", gguf.hidden, hf.hidden),
        ("attention heads", gguf.heads, hf.heads),
        ("KV heads", gguf.kv_heads, hf.kv_heads),
        ("head size", gguf.head_dim, hf.head_dim),
        ("vocabulary size", gguf.vocab_size, hf.vocab_size),
    )
    for label, a, b in numbers:
        if a is not None and b is not None and a != b:
            return f"{label} differs (GGUF {a}, Hugging Face {b})"
    token = _token_difference(gguf, hf)
    if token:
        return token
    if (
        gguf.rope_theta is not None
        and hf.rope_theta is not None
        and not math.isclose(gguf.rope_theta, hf.rope_theta, rel_tol=RELATIVE_TOLERANCE)
    ):
        return f"RoPE theta differs (GGUF {gguf.rope_theta:g}, Hugging Face {hf.rope_theta:g})"
    if gguf.rope_scaling != hf.rope_scaling:
        return f"RoPE scaling differs (GGUF {gguf.rope_scaling}, Hugging Face {hf.rope_scaling})"
    if (
        gguf.rope_factor is not None
        and hf.rope_factor is not None
        and not math.isclose(gguf.rope_factor, hf.rope_factor, rel_tol=RELATIVE_TOLERANCE)
    ):
        return f"RoPE scaling factor differs (GGUF {gguf.rope_factor:g}, Hugging Face {hf.rope_factor:g})"
    if gguf.rope_freqs is not None and hf.rope_freqs is not None:
        if len(gguf.rope_freqs) != len(hf.rope_freqs):
            return (
                f"RoPE llama3 factors differ (GGUF {len(gguf.rope_freqs)} of them, "
                f"Hugging Face {len(hf.rope_freqs)})"
            )
        for i, (a, b) in enumerate(zip(gguf.rope_freqs, hf.rope_freqs, strict=True)):
            if not math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE):
                return f"RoPE llama3 factor {i} differs (GGUF {a:g}, Hugging Face {b:g})"
    return None


def _token_difference(gguf: NetworkFacts, hf: NetworkFacts) -> str | None:
    if gguf.tokens is not None and hf.tokens is not None:
        for i, (a, b) in enumerate(zip(gguf.tokens, hf.tokens, strict=False)):
            if a != b:
                return f"token {i} differs (GGUF {a!r}, Hugging Face {b!r})"
        if len(gguf.tokens) != len(hf.tokens):
            return f"token count differs (GGUF {len(gguf.tokens)}, Hugging Face {len(hf.tokens)})"
    if gguf.special is not None and hf.special is not None and gguf.special != hf.special:
        tid = min(gguf.special ^ hf.special)
        text = repr(gguf.tokens[tid]) if gguf.tokens and tid < len(gguf.tokens) else f"id {tid}"
        where = "the GGUF" if tid in gguf.special else "the Hugging Face tokenizer"
        other = "the Hugging Face tokenizer" if tid in gguf.special else "the GGUF"
        return f"special tokens differ (token {tid} {text} is special in {where}, not in {other})"
    return None


def check_pair(gguf_path: Path, gguf: NetworkFacts, hf_ref: str, hf: NetworkFacts) -> None:
    """Raise PairingError (one line) when the two are not the same network."""
    difference = first_difference(gguf, hf)
    if difference is not None:
        raise PairingError(
            f"{gguf_path.name} and {hf_ref} are not the same network: {difference}; "
            f"train on the Hugging Face model this GGUF was made from (or pass that GGUF with --base-gguf)"
        )


def _int(config: Mapping[str, Any], key: str) -> int | None:
    value = config.get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PairingError(f"{path}: cannot read it as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise PairingError(f"{path}: not a JSON object")
    return data
