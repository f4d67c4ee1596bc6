"""The pairing check: a GGUF (written here with the gguf package, read by hermesd's validating reader)
and a Hugging Face config.json + tokenizer.json are the same network, or refused in one line naming
the first difference. The tiny test models and `hermesd tune` refusing a mismatched pair before
training are in tests/engine/test_tune_pairing.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from hermesd.models.pairing import PairingError, check_pair, gguf_facts, hf_facts, hf_facts_from_folder
from hermesd.runtime.tune.base import BaseSpec, TuneError
from hermesd.runtime.tune.pairing import check_base_pairing

HIDDEN, HEADS, KV, LAYERS, HEAD_DIM = 64, 4, 2, 2, 16
WORDS = ["a", "b", "c", "Ġthe"]
ADDED = [("<think>", False), ("<|im_start|>", True), ("<|im_end|>", True)]
VOCAB = len(WORDS) + len(ADDED) + 1  # one id the tokenizer leaves unused: [PAD7]
LLAMA3 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


def config(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model_type": "llama",
        "num_hidden_layers": LAYERS,
        "hidden_size": HIDDEN,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV,
        "vocab_size": VOCAB,
        "rope_theta": 500000.0,
        "rope_scaling": None,
    }
    return base | over


def tokenizer() -> dict[str, Any]:
    added = [
        {"id": len(WORDS) + i, "content": text, "special": special} for i, (text, special) in enumerate(ADDED)
    ]
    return {"model": {"type": "BPE", "vocab": {w: i for i, w in enumerate(WORDS)}}, "added_tokens": added}


def llama3_factors(theta: float) -> list[float]:
    return list(hf_facts(config(rope_theta=theta, rope_scaling=LLAMA3), None).rope_freqs or ())


def write_gguf(path: Path, *, rope_freqs: list[float] | None = None, theta: float = 500000.0) -> Path:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(LAYERS)
    w.add_embedding_length(HIDDEN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV)
    w.add_feed_forward_length(128)
    w.add_context_length(256)
    w.add_rope_freq_base(theta)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("gpt2")
    tokens = [*WORDS, *(t for t, _ in ADDED), "[PAD7]"]
    types = [gguf.TokenType.NORMAL] * len(WORDS)
    types += [gguf.TokenType.CONTROL if s else gguf.TokenType.USER_DEFINED for _, s in ADDED]
    types += [gguf.TokenType.UNUSED]
    w.add_token_list(tokens)
    w.add_token_types([int(t) for t in types])
    w.add_tensor("token_embd.weight", np.zeros((VOCAB, HIDDEN), np.float32))
    if rope_freqs is not None:
        w.add_tensor("rope_freqs.weight", np.array(rope_freqs, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def refusal(gguf_path: Path, cfg: dict[str, Any], tok: dict[str, Any] | None) -> str | None:
    try:
        check_pair(gguf_path, gguf_facts(gguf_path), "hf-model", hf_facts(cfg, tok))
    except PairingError as exc:
        return str(exc)
    return None


def test_the_same_network_is_accepted(tmp_path: Path) -> None:
    assert refusal(write_gguf(tmp_path / "m.gguf"), config(), tokenizer()) is None


def test_llama3_rope_scaling_is_compared_through_the_rope_freqs_tensor(tmp_path: Path) -> None:
    paired = write_gguf(tmp_path / "m.gguf", rope_freqs=llama3_factors(500000.0))
    assert refusal(paired, config(rope_scaling=LLAMA3), tokenizer()) is None
    # transformers 5's `rope_parameters` form of the same config
    v5 = config(rope_parameters={"rope_theta": 500000.0, **LLAMA3})
    del v5["rope_theta"], v5["rope_scaling"]
    assert refusal(paired, v5, tokenizer()) is None


def _set_token(tok: dict[str, Any]) -> None:
    tok["model"]["vocab"] = {("d" if w == "c" else w): i for w, i in tok["model"]["vocab"].items()}


def _unspecial(tok: dict[str, Any]) -> None:
    tok["added_tokens"][0]["content"] = "<|think|>"  # looks special: a control token to the converter


@pytest.mark.parametrize(
    ("cfg", "edit", "rope_freqs", "message"),
    [
        (config(model_type="qwen3"), None, None, "architecture differs (GGUF llama, Hugging Face qwen3)"),
        (config(num_hidden_layers=3), None, None, "layer count differs (GGUF 2, Hugging Face 3)"),
        (config(hidden_size=128), None, None, "hidden size differs (GGUF 64, Hugging Face 128)"),
        (config(num_attention_heads=8), None, None, "attention heads differs (GGUF 4, Hugging Face 8)"),
        (config(num_key_value_heads=4), None, None, "KV heads differs (GGUF 2, Hugging Face 4)"),
        (config(head_dim=32), None, None, "head size differs (GGUF 16, Hugging Face 32)"),
        (config(vocab_size=VOCAB + 1), None, None, "vocabulary size differs (GGUF 8, Hugging Face 9)"),
        (config(), _set_token, None, "token 2 differs (GGUF 'c', Hugging Face 'd')"),
        (config(), _unspecial, None, "token 4 differs (GGUF '<think>', Hugging Face '<|think|>')"),
        (config(rope_theta=10000.0), None, None, "RoPE theta differs (GGUF 500000, Hugging Face 10000)"),
        (config(rope_scaling=LLAMA3), None, None, "RoPE scaling differs (GGUF none, Hugging Face llama3)"),
        (config(), None, "llama3", "RoPE scaling differs (GGUF llama3, Hugging Face none)"),
        (config(rope_scaling=LLAMA3 | {"factor": 4.0}), None, "llama3", "RoPE llama3 factor"),
    ],
)
def test_a_mismatch_is_refused_in_one_line_naming_the_first_difference(
    tmp_path: Path, cfg: dict[str, Any], edit: Any, rope_freqs: str | None, message: str
) -> None:
    freqs = llama3_factors(500000.0) if rope_freqs else None
    path = write_gguf(tmp_path / "m.gguf", rope_freqs=freqs)
    tok = copy.deepcopy(tokenizer())
    if edit is not None:
        edit(tok)
    text = refusal(path, cfg, tok)
    assert text is not None and message in text, text
    assert "\n" not in text and text.startswith("m.gguf and hf-model are not the same network: ")


def test_special_flags_are_compared(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf")
    tok = tokenizer()
    tok["added_tokens"][1]["content"] = "<im_start>"  # no longer special-looking ...
    tok["added_tokens"][1]["special"] = False  # ... nor marked special
    facts = hf_facts(config(), tok)
    text = refusal(path, config(), tok)
    assert facts.special == frozenset({6})
    assert text is not None and "token 5 differs" in text  # the text differs first
    gguf_side = gguf_facts(path)
    assert gguf_side.special == frozenset({5, 6}) and gguf_side.tokens is not None
    same_text = hf_facts(config(), tokenizer())
    from dataclasses import replace

    from hermesd.models.pairing import first_difference

    assert first_difference(gguf_side, replace(same_text, special=frozenset({6}))) == (
        "special tokens differ (token 5 '<|im_start|>' is special in the GGUF, "
        "not in the Hugging Face tokenizer)"
    )


def test_the_tune_check_reads_a_folder_and_refuses_with_a_tune_error(tmp_path: Path) -> None:
    gguf_path = write_gguf(tmp_path / "m.gguf")
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer()))
    (folder / "config.json").write_text(json.dumps(config()))
    assert hf_facts_from_folder(folder).tokens is not None
    check_base_pairing(BaseSpec("hf-dir", str(folder), gguf_path))  # accepted: returns
    (folder / "config.json").write_text(json.dumps(config(num_hidden_layers=5)))
    with pytest.raises(TuneError, match=r"layer count differs \(GGUF 2, Hugging Face 5\)"):
        check_base_pairing(BaseSpec("hf-dir", str(folder), gguf_path))
    # a GGUF base is the served network itself; a base without a GGUF has nothing to pair with
    check_base_pairing(BaseSpec("gguf", str(gguf_path), gguf_path))
    check_base_pairing(BaseSpec("hf-dir", str(folder), None))


def _llama3(factor: float, low: float, high: float, old: int) -> dict[str, Any]:
    keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    return {"rope_type": "llama3", **dict(zip(keys, (factor, low, high, old), strict=True))}


@pytest.mark.parametrize(
    ("rope", "theta", "dim"),
    [
        (_llama3(8.0, 1.0, 4.0, 8192), 500000.0, 128),  # Llama 3.1 (Hermes 4 70B/405B)
        (_llama3(32.0, 1.0, 4.0, 8192), 500000.0, 64),  # Llama 3.2
        (_llama3(8.0, 1.0, 4.0, 32), 10000.0, 16),  # the parity tests' tiny model
        (_llama3(16.0, 1.0, 2.0, 4096), 10000.0, 64),
    ],
)
def test_llama3_parameters_reproduce_the_stored_factors(rope: dict[str, Any], theta: float, dim: int) -> None:
    from hermesd.models.pairing import llama3_factors, llama3_parameters

    factors = llama3_factors(rope, theta, dim)
    found = llama3_parameters(factors, theta, dim)
    assert found is not None and found["rope_type"] == "llama3" and found["rope_theta"] == theta
    assert llama3_factors(found, theta, dim) == pytest.approx(factors, rel=1e-6)
    if rope["original_max_position_embeddings"] == 8192:  # Llama's own: found as they are
        assert found == rope | {"rope_theta": theta}


@pytest.mark.parametrize(
    ("factors", "dim"),
    [
        ([1.0, 3.0, 2.0, 8.0], 8),  # not monotonic: no llama3 scaling
        ([1.0, 1.0, 8.0], 8),  # one factor missing for the head size
        ([1.0, 1.1, 7.0, 8.0], 8),  # a smooth band no searched parameter set gives
    ],
)
def test_llama3_parameters_none_when_nothing_reproduces_the_factors(factors: list[float], dim: int) -> None:
    from hermesd.models.pairing import llama3_parameters

    assert llama3_parameters(factors, 10000.0, dim) is None


@pytest.mark.parametrize(
    ("rope_freqs", "expected"),
    [
        (None, None),  # no rope_freqs tensor: transformers' default RoPE is right
        (llama3_factors(500000.0), LLAMA3 | {"rope_theta": 500000.0}),
        ([1.0, 3.0, 2.0, 8.0, 8.0, 8.0, 8.0, 8.0], TuneError),
    ],
)
def test_the_gguf_base_path_reads_llama3_scaling_from_rope_freqs(
    tmp_path: Path, rope_freqs: list[float] | None, expected: Any
) -> None:
    """load_hf_model's fix for a Llama 3.1 GGUF (its logits are in tests/engine/test_lora_parity_archs.py)."""
    from hermesd.runtime.tune.base import gguf_llama3_rope, read_base_gguf

    path = write_gguf(tmp_path / "m.gguf", rope_freqs=rope_freqs)
    if expected is TuneError:
        with pytest.raises(TuneError, match=r"rope_freqs\.weight factors match no llama3 RoPE scaling"):
            gguf_llama3_rope(path, read_base_gguf(path))
        return
    assert gguf_llama3_rope(path, read_base_gguf(path)) == expected
