"""What the one GGUF reader (models/gguf_validate.py) returns besides its verdict: tensors, vocabulary
size, per-layer arrays and the base fingerprint, checked against `gguf.GGUFReader` reading the same
files. The fingerprint must keep the value it had when it was computed with GGUFReader: adapters
already record it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGUFWriter

from hermesd.models.gguf_info import read_gguf_info
from hermesd.models.gguf_lora import read_adapter_info, write_lora_gguf
from hermesd.models.gguf_validate import base_fingerprint, looks_like_gguf, validate_gguf
from tests.fixtures.bad_ggufs import TOKENS, add_hparams, build_good_adapter, build_good_model


def reader_fingerprint(path: Path) -> str:
    """The fingerprint as hermesd computed it with gguf.GGUFReader (models/identity.py, until it was
    folded into the validating reader): the reference the value must keep matching."""
    reader = gguf.GGUFReader(str(path), "r")
    field = reader.fields.get("general.architecture")
    arch = bytes(field.parts[field.data[0]]).decode("utf-8", "replace") if field else ""
    h = hashlib.sha256(arch.encode())
    for t in sorted(reader.tensors, key=lambda t: t.name):
        h.update(t.name.encode())
        h.update(",".join(str(int(d)) for d in t.shape).encode())
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is not None:
        for idx in tokens.data:
            h.update(bytes(tokens.parts[idx]))
            h.update(b"\0")
    return f"{arch}-{h.hexdigest()[:32]}"


def big_vocab_model(path: Path, n_tokens: int) -> Path:
    """A model whose vocabulary spans several of the reader's 1 MiB buffers, with odd token bytes."""
    w = GGUFWriter(path, "llama")
    add_hparams(w, "llama")
    w.add_token_list([f"tok{i}-" + "é" * (i % 400) for i in range(n_tokens)])
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_fingerprint_keeps_the_value_gguf_reader_gave(tmp_path: Path, arch: str) -> None:
    path = build_good_model(tmp_path / "m.gguf", arch=arch)
    assert base_fingerprint(path) == reader_fingerprint(path)
    assert base_fingerprint(path).startswith(f"{arch}-")


def test_fingerprint_of_a_vocabulary_over_many_buffers(tmp_path: Path) -> None:
    path = big_vocab_model(tmp_path / "big.gguf", 6_000)
    assert path.stat().st_size > 2 << 20  # two buffers and some
    assert base_fingerprint(path) == reader_fingerprint(path)


def test_fingerprint_ignores_tensor_types_but_not_the_vocabulary(tmp_path: Path) -> None:
    a = build_good_model(tmp_path / "a.gguf")
    w = GGUFWriter(tmp_path / "b.gguf", "llama")
    add_hparams(w, "llama")
    w.add_token_list([*TOKENS[:-1], "changed"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert base_fingerprint(a) != base_fingerprint(tmp_path / "b.gguf")
    assert validate_gguf(a).fingerprint is None  # computed only when asked for


def test_summary_facts_match_gguf_reader(tmp_path: Path) -> None:
    path = build_good_model(tmp_path / "m.gguf")
    summary = validate_gguf(path)
    reader = gguf.GGUFReader(str(path), "r")
    assert [(t.name, t.shape, t.ggml_type, t.nbytes) for t in summary.tensors] == [
        (t.name, tuple(int(d) for d in t.shape), t.tensor_type, int(t.n_bytes)) for t in reader.tensors
    ]
    assert summary.n_params == sum(int(t.n_elements) for t in reader.tensors)
    assert summary.token_count == len(TOKENS)
    assert summary.arch_int("block_count") == int(reader.fields["llama.block_count"].contents())


def test_per_layer_arrays_are_kept_whole_and_read_as_their_largest_item(tmp_path: Path) -> None:
    layers = 100  # more than a summary keeps of an ordinary array
    kv_heads = [2 if i % 2 else 1 for i in range(layers)]
    path = build_good_model(
        tmp_path / "m.gguf", hparams={"block_count": layers, "attention.head_count_kv": kv_heads}
    )
    summary = validate_gguf(path)
    assert summary.kv["llama.attention.head_count_kv"] == tuple(kv_heads)
    assert summary.arch_int("attention.head_count_kv") == 2
    assert read_gguf_info(path).head_count_kv == 2


def test_adapter_facts(tmp_path: Path) -> None:
    path = tmp_path / "a.gguf"
    module = "base_model.model.model.layers.0.self_attn.v_proj"
    state = {f"{module}.lora_A.weight": np.ones((2, 8)), f"{module}.lora_B.weight": np.ones((8, 2))}
    write_lora_gguf(
        path,
        arch="llama",
        config={"num_attention_heads": 2},
        lora_state=state,
        alpha=4.0,
        rank=2,
        base_fingerprint="llama-abc",
        base_name="Base",
    )
    info = read_adapter_info(path)
    assert (info.architecture, info.alpha, info.rank, info.tensor_count) == ("llama", 4.0, 2, 2)
    assert (info.base_fingerprint, info.base_name) == ("llama-abc", "Base")
    no_record = read_adapter_info(build_good_adapter(tmp_path / "other.gguf"))
    assert (no_record.base_fingerprint, no_record.rank) == (None, None)


def test_looks_like_gguf(tmp_path: Path) -> None:
    assert looks_like_gguf(build_good_model(tmp_path / "m.gguf"))
    (tmp_path / "x.gguf").write_bytes(b"GGU")
    assert not looks_like_gguf(tmp_path / "x.gguf")
    assert not looks_like_gguf(tmp_path)  # a folder
    assert not looks_like_gguf(tmp_path / "missing.gguf")
