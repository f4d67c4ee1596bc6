"""models/gguf_write.py (tensor names, the Llama q/k permutation, atomic writes) and the tests' model
writer (tests/fixtures/gguf_model_writer.py), with files re-read by GGUFReader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from hermesd.models.gguf_write import GGUFWriteError, hf_to_gguf_name, llama_permute_qk, write_atomically
from tests.fixtures.gguf_model_writer import (
    TokenizerSpec,
    bpe_tokenizer_spec,
    encode_tensor,
    llama_unpermute_qk,
    write_model_gguf,
)

NAMES = [
    ("llama", "model.embed_tokens.weight", "token_embd.weight"),
    ("llama", "model.norm.weight", "output_norm.weight"),
    ("llama", "lm_head.weight", "output.weight"),
    ("llama", "model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight"),
    ("llama", "model.layers.0.post_attention_layernorm.weight", "blk.0.ffn_norm.weight"),
    ("llama", "model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight"),
    ("llama", "model.layers.1.self_attn.k_proj.weight", "blk.1.attn_k.weight"),
    ("llama", "model.layers.1.self_attn.v_proj.weight", "blk.1.attn_v.weight"),
    ("llama", "model.layers.1.self_attn.o_proj.weight", "blk.1.attn_output.weight"),
    ("llama", "model.layers.79.mlp.gate_proj.weight", "blk.79.ffn_gate.weight"),
    ("llama", "model.layers.2.mlp.up_proj.weight", "blk.2.ffn_up.weight"),
    ("llama", "model.layers.2.mlp.down_proj.weight", "blk.2.ffn_down.weight"),
    ("qwen3", "model.layers.3.self_attn.q_norm.weight", "blk.3.attn_q_norm.weight"),
    ("qwen3", "model.layers.3.self_attn.k_norm.weight", "blk.3.attn_k_norm.weight"),
    ("qwen3", "model.layers.39.self_attn.q_proj.weight", "blk.39.attn_q.weight"),
    ("qwen3", "model.embed_tokens.weight", "token_embd.weight"),
    # seed_oss (Hermes 4.3): q/k/v biases, and its post-attention norm is llama.cpp's attn_post_norm
    ("seed_oss", "model.layers.63.self_attn.q_proj.bias", "blk.63.attn_q.bias"),
    ("seed_oss", "model.layers.0.self_attn.v_proj.bias", "blk.0.attn_v.bias"),
    ("seed_oss", "model.layers.0.post_attention_layernorm.weight", "blk.0.post_attention_norm.weight"),
    ("seed_oss", "model.layers.0.self_attn.o_proj.weight", "blk.0.attn_output.weight"),
    ("seed_oss", "lm_head.weight", "output.weight"),
    # peft LoRA parameters: saved adapters drop the adapter name, live models keep it ("default").
    (
        "llama",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        "blk.0.attn_q.weight.lora_a",
    ),
    ("llama", "base_model.model.model.layers.5.mlp.down_proj.lora_B.weight", "blk.5.ffn_down.weight.lora_b"),
    (
        "qwen3",
        "base_model.model.model.layers.2.self_attn.o_proj.lora_B.default.weight",
        "blk.2.attn_output.weight.lora_b",
    ),
    ("qwen3", "model.layers.1.mlp.up_proj.lora_A.weight", "blk.1.ffn_up.weight.lora_a"),
    (
        "seed_oss",
        "base_model.model.model.layers.7.self_attn.k_proj.lora_B.default.weight",
        "blk.7.attn_k.weight.lora_b",
    ),
]


@pytest.mark.parametrize(("arch", "hf_name", "expected"), NAMES)
def test_hf_to_gguf_name(arch: str, hf_name: str, expected: str) -> None:
    assert hf_to_gguf_name(arch, hf_name) == expected


@pytest.mark.parametrize(
    ("arch", "hf_name", "message"),
    [
        ("llama", "model.layers.0.self_attn.q_norm.weight", "q_norm"),  # llama has no q_norm
        ("qwen3", "model.layers.0.mystery.weight", "mystery"),
        ("mamba", "model.embed_tokens.weight", "mamba"),
    ],
)
def test_hf_to_gguf_name_rejects_unknown(arch: str, hf_name: str, message: str) -> None:
    with pytest.raises(GGUFWriteError, match=message):
        hf_to_gguf_name(arch, hf_name)


@pytest.mark.parametrize(
    ("n_head", "n_head_kv", "head_dim", "cols"), [(4, 4, 8, 3), (4, 2, 8, 5), (8, 1, 4, 1)]
)
def test_permutation_round_trips(n_head: int, n_head_kv: int, head_dim: int, cols: int) -> None:
    rows = n_head_kv * head_dim
    w = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    permuted = llama_permute_qk(w, n_head, n_head_kv)
    assert not np.array_equal(permuted, w)
    np.testing.assert_array_equal(llama_unpermute_qk(permuted, n_head, n_head_kv), w)


def test_permutation_interleaves_the_two_halves_of_each_head() -> None:
    # HF keeps RoPE pairs as (i, i + d/2); llama.cpp wants them adjacent: (2i, 2i + 1).
    w = np.arange(8, dtype=np.float32).reshape(8, 1)  # 2 heads of 4 rows
    assert llama_permute_qk(w, 2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_permutation_rejects_rows_that_do_not_split_into_heads() -> None:
    with pytest.raises(GGUFWriteError):
        llama_permute_qk(np.zeros((6, 2), dtype=np.float32), 4)


@pytest.mark.parametrize(
    ("shape", "quant", "expected"),
    [
        ((64,), "Q8_0", gguf.GGMLQuantizationType.F32),  # norms stay F32
        ((4, 64), "Q8_0", gguf.GGMLQuantizationType.Q8_0),
        ((4, 48), "Q8_0", gguf.GGMLQuantizationType.F16),  # 48 is not a multiple of Q8_0's 32-wide blocks
        ((4, 64), "F16", gguf.GGMLQuantizationType.F16),
        ((4, 64), "F32", gguf.GGMLQuantizationType.F32),
    ],
)
def test_encode_tensor_types(shape: tuple[int, ...], quant: str, expected: gguf.GGMLQuantizationType) -> None:
    _, qtype = encode_tensor(np.ones(shape, dtype=np.float32), quant)
    assert qtype == expected


def test_encode_tensor_rejects_unknown_quant() -> None:
    with pytest.raises(GGUFWriteError, match="Q4_K"):
        encode_tensor(np.ones((4, 64), dtype=np.float32), "Q4_K")


def _config(arch: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "vocab_size": 8,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_theta": 1000.0, "rope_type": "default"},
        "tie_word_embeddings": arch == "qwen3",
    }
    if arch == "qwen3":
        config["head_dim"] = 32  # 4 x 32 = 128 != hidden 64
    return config


def _state_dict(config: dict[str, Any]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    hidden, ff, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    head = config.get("head_dim", hidden // config["num_attention_heads"])
    q, kv = config["num_attention_heads"] * head, config["num_key_value_heads"] * head
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (vocab, hidden),
        "model.norm.weight": (hidden,),
    }
    shapes["lm_head.weight"] = (vocab, hidden)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (hidden,),
            p + "post_attention_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (q, hidden),
            p + "self_attn.k_proj.weight": (kv, hidden),
            p + "self_attn.v_proj.weight": (kv, hidden),
            p + "self_attn.o_proj.weight": (hidden, q),
            p + "mlp.gate_proj.weight": (ff, hidden),
            p + "mlp.up_proj.weight": (ff, hidden),
            p + "mlp.down_proj.weight": (hidden, ff),
        }
        if "head_dim" in config:
            shapes |= {p + "self_attn.q_norm.weight": (head,), p + "self_attn.k_norm.weight": (head,)}
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


TOKENIZER = TokenizerSpec(
    tokens=["a", "b", "ab", "Ġ", "<|im_start|>", "<|im_end|>", "<think>", "</think>"],
    token_types=[1, 1, 1, 1, 3, 3, 4, 4],
    merges=["a b"],
    bos_id=None,
    eos_id=5,
    eot_id=5,
    pad_id=4,
)


def _fields(reader: gguf.GGUFReader) -> dict[str, Any]:
    return {name: field.contents() for name, field in reader.fields.items()}


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("quant", ["F32", "F16", "Q8_0"])
def test_written_model_reads_back(tmp_path: Path, arch: str, quant: str) -> None:
    config, weights = _config(arch), _state_dict(_config(arch))
    path = tmp_path / "m.gguf"
    write_model_gguf(
        path,
        arch=arch,
        config=config,
        state_dict=weights,
        tokenizer=TOKENIZER,
        name="Test Model",
        basename="Test",
        quant=quant,
        chat_template="{{ messages }}",
    )
    reader = gguf.GGUFReader(path)
    kv = _fields(reader)
    head = config.get("head_dim", 16)
    expected = {
        "general.architecture": arch,
        "general.name": "Test Model",
        "general.basename": "Test",
        f"{arch}.context_length": 512,
        f"{arch}.embedding_length": 64,
        f"{arch}.block_count": 2,
        f"{arch}.feed_forward_length": 96,
        f"{arch}.attention.head_count": 4,
        f"{arch}.attention.head_count_kv": 2,
        f"{arch}.attention.key_length": head,
        f"{arch}.attention.value_length": head,
        f"{arch}.rope.dimension_count": head,
        f"{arch}.rope.freq_base": 1000.0,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.tokens": list(TOKENIZER.tokens),
        "tokenizer.ggml.token_type": list(TOKENIZER.token_types),
        "tokenizer.ggml.merges": ["a b"],
        "tokenizer.ggml.eos_token_id": 5,
        "tokenizer.ggml.eot_token_id": 5,
        "tokenizer.ggml.padding_token_id": 4,
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.chat_template": "{{ messages }}",
    }
    assert {k: kv.get(k) for k in expected} == expected
    assert kv[f"{arch}.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert "tokenizer.ggml.bos_token_id" not in kv

    tensors = {t.name: t for t in reader.tensors}
    # Tied embeddings (qwen3 here) have no separate output matrix: llama.cpp reuses token_embd.
    assert ("output.weight" in tensors) == (arch == "llama")
    assert len(tensors) == len(weights) - (arch == "qwen3")
    qtype = gguf.GGMLQuantizationType[quant]
    for name, t in tensors.items():
        assert t.tensor_type == (gguf.GGMLQuantizationType.F32 if len(t.shape) == 1 else qtype), name

    q = weights["model.layers.1.self_attn.q_proj.weight"]
    k = weights["model.layers.1.self_attn.k_proj.weight"]
    if arch == "llama":  # llama.cpp's RoPE layout; qwen3 is written as is
        q, k = llama_permute_qk(q, 4, 4), llama_permute_qk(k, 4, 2)
    tolerance = {"F32": 0, "F16": 2e-3, "Q8_0": 3e-2}[quant]
    for name, want in (("blk.1.attn_q.weight", q), ("blk.1.attn_k.weight", k)):
        t = tensors[name]
        got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(want.shape)
        np.testing.assert_allclose(got, want, atol=tolerance * float(np.abs(want).max()))


@pytest.mark.parametrize(
    ("rope", "expected"),
    [
        # Llama 3.1's scaling over a 32-token original context, head size 16, theta 1000: the
        # frequencies fall in the kept (1), smoothed and divided (8) bands of the converter
        (
            {
                "rope_type": "llama3",
                "rope_theta": 1000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
            [1.0, 2.1751, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0],
        ),
        ({"rope_type": "default", "rope_theta": 1000.0}, None),
    ],
)
def test_llama3_rope_is_written_as_the_rope_freqs_tensor(
    tmp_path: Path, rope: dict[str, Any], expected: list[float] | None
) -> None:
    config = _config("llama") | {"rope_parameters": rope}
    path = tmp_path / "m.gguf"
    write_model_gguf(
        path, arch="llama", config=config, state_dict=_state_dict(config), tokenizer=TOKENIZER, name="x"
    )
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    if expected is None:
        assert "rope_freqs.weight" not in tensors
        return
    freqs = tensors["rope_freqs.weight"]
    assert freqs.tensor_type == gguf.GGMLQuantizationType.F32
    np.testing.assert_allclose(np.asarray(freqs.data), expected, rtol=1e-4)


def test_missing_config_field_is_named(tmp_path: Path) -> None:
    config = _config("llama")
    del config["rms_norm_eps"]
    with pytest.raises(GGUFWriteError, match="rms_norm_eps"):
        write_model_gguf(
            tmp_path / "m.gguf", arch="llama", config=config, state_dict={}, tokenizer=TOKENIZER, name="x"
        )
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "out.gguf"
    target.write_bytes(b"old")

    def broken(tmp: str) -> gguf.GGUFWriter:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomically(target, broken)
    assert [p.name for p in tmp_path.iterdir()] == ["out.gguf"]
    assert target.read_bytes() == b"old"


def _tokenizer_json() -> dict[str, Any]:
    return {
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]},
        "added_tokens": [
            {"id": 3, "content": "<|im_end|>", "special": True},
            {"id": 4, "content": "<think>", "special": False},
        ],
    }


def test_bpe_tokenizer_spec_types_and_ids() -> None:
    spec = bpe_tokenizer_spec(_tokenizer_json(), bos=None, eos="<|im_end|>", eot="<|im_end|>", add_bos=False)
    assert list(spec.tokens) == ["a", "b", "ab", "<|im_end|>", "<think>"]
    assert list(spec.token_types) == [
        gguf.TokenType.NORMAL,
        gguf.TokenType.NORMAL,
        gguf.TokenType.NORMAL,
        gguf.TokenType.CONTROL,
        gguf.TokenType.USER_DEFINED,
    ]
    assert list(spec.merges) == ["a b"]
    assert (spec.bos_id, spec.eos_id, spec.eot_id, spec.pad_id) == (None, 3, 3, None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"eos": "<|eot_id|>"}, "eos token '<\\|eot_id\\|>'"),
        ({"model": "WordPiece"}, "WordPiece"),
    ],
)
def test_bpe_tokenizer_spec_errors(change: dict[str, str], message: str) -> None:
    data = _tokenizer_json()
    if "model" in change:
        data["model"]["type"] = change["model"]
    with pytest.raises(GGUFWriteError, match=message):
        bpe_tokenizer_spec(data, bos=None, eos=change.get("eos", "<|im_end|>"))
