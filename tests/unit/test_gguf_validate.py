"""The GGUF validator against good files, a generated malformed corpus, big sparse files and a fuzzer."""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hermesd.models.gguf_validate import (
    GGUFOmitted,
    GGUFSummary,
    GGUFValidationError,
    validate_gguf,
)
from tests.fixtures.bad_ggufs import (
    CHAT_TEMPLATE,
    TOKENS,
    BadGGUF,
    HParam,
    add_hparams,
    build_corpus,
    build_good_adapter,
    build_good_model,
)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad-ggufs")


@pytest.fixture(scope="module")
def corpus(corpus_dir: Path) -> list[BadGGUF]:
    return build_corpus(corpus_dir)


def _refusal(entry: BadGGUF, kind: str) -> str | None:
    """None when the file is refused as the entry expects; otherwise what went wrong."""
    try:
        validate_gguf(entry.path, kind=kind)
    except GGUFValidationError as exc:
        message = str(exc)
        if not message.startswith(f"{entry.path}: "):
            return f"{entry.name} ({kind}): message does not start with the path: {message}"
        if entry.problem not in message:
            return f"{entry.name} ({kind}): expected {entry.problem!r} in: {message}"
        return None
    return f"{entry.name} ({kind}): accepted"


def _check_all(entries: list[BadGGUF]) -> None:
    failures = [f for e in entries for kind in e.kinds if (f := _refusal(e, kind)) is not None]
    assert not failures, "\n".join(failures[:20]) + f"\n({len(failures)} failures)"


def test_good_model_passes(corpus_dir: Path, corpus: list[BadGGUF]) -> None:
    path = corpus_dir / "good-model.gguf"
    summary = validate_gguf(path)
    assert summary.path == path
    assert (summary.architecture, summary.name) == ("llama", "hermesd test model")
    assert summary.basename == "hermesd-test"
    assert summary.general_type == "model"
    assert summary.tensor_count == 4
    assert summary.version == 3
    assert summary.chat_template == CHAT_TEMPLATE
    assert summary.file_size == path.stat().st_size
    assert summary.shards == (path,)
    assert summary.kv["tokenizer.ggml.tokens"] == tuple(TOKENS)
    assert summary.kv["general.alignment"] == 32
    assert summary.kv["hermesd.test_flag"] is True
    assert "tokenizer.chat_template" not in summary.kv  # kept once, in chat_template


def test_good_adapter_passes(corpus_dir: Path, corpus: list[BadGGUF]) -> None:
    summary = validate_gguf(corpus_dir / "good-adapter.gguf", kind="adapter")
    assert (summary.general_type, summary.kv["adapter.type"], summary.tensor_count) == ("adapter", "lora", 4)
    assert summary.chat_template is None


def test_patched_files_are_refused(corpus: list[BadGGUF]) -> None:
    patched = [e for e in corpus if not e.name.startswith("truncated-")]
    assert len(patched) >= 50
    _check_all(patched)


def test_truncated_files_are_refused(corpus: list[BadGGUF]) -> None:
    cuts = [e for e in corpus if e.name.startswith("truncated-")]
    assert len(cuts) > 1000  # every byte of the header sections plus a sample of the data
    _check_all(cuts)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("a-directory", "it is a directory"),
        ("a-fifo", "it is a FIFO"),
        ("dev-zero-link", "it is a character device"),
        ("missing-file", "no such file"),
    ],
)
def test_special_files_are_refused_without_reading(corpus: list[BadGGUF], name: str, problem: str) -> None:
    (entry,) = [e for e in corpus if e.name == name]
    assert problem in entry.problem
    _check_all([entry])  # a FIFO with no writer would block forever if it were opened for reading


@pytest.mark.parametrize(
    ("arch", "changes"),
    [
        ("llama", {"block_count": 512}),
        ("llama", {"block_count": 80, "attention.head_count_kv": [1] * 40 + [2] * 40}),
        ("llama", {"expert_count": 8, "expert_used_count": 2}),
        (
            "llama",
            {
                "expert_count": 8,
                "expert_used_count": 2,
                "expert_group_count": 4,
                "expert_group_used_count": 2,
            },
        ),
        ("llama", {"expert_count": 1024, "expert_used_count": [8]}),
        ("llama", {"attention.layer_norm_rms_epsilon": 0.0, "rope.scaling.type": "yarn"}),
        ("qwen3", {"attention.key_length": 8, "attention.value_length": 8, "rope.dimension_count": 8}),
        ("seed_oss", {"attention.head_count": 1, "attention.head_count_kv": 1}),
        ("qwen2", {"attention.key_length": 4, "attention.value_length": 4}),
        ("gemma3", {"rope.dimension_count": 2, "attention.sliding_window": 4}),
        ("gemma3", {"attention.sliding_window": 4, "attention.sliding_window_pattern": [1, 0] * 256}),
        # no experts with fewer than two for these: llama.cpp drops expert_used_count itself
        ("hunyuan-dense", {"expert_count": 1, "expert_used_count": 0}),
        # architectures without their own rules get the common ones only: no heads, no epsilon
        ("mamba", {"attention.head_count": 0, "attention.layer_norm_rms_epsilon": None}),
    ],
)
def test_hparams_llama_cpp_accepts_pass(tmp_path: Path, arch: str, changes: dict[str, HParam | None]) -> None:
    path = build_good_model(tmp_path / "m.gguf", arch=arch, hparams=changes)
    assert validate_gguf(path).architecture == arch


def test_symlink_to_a_good_file_is_followed(tmp_path: Path) -> None:
    good = build_good_model(tmp_path / "blob")
    link = tmp_path / "snapshot.gguf"  # the Hugging Face cache links snapshots to blobs
    link.symlink_to(good)
    assert validate_gguf(link).path == link


def test_error_type_and_fields(tmp_path: Path) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(b"GGML" + bytes(20))
    with pytest.raises(GGUFValidationError) as info:
        validate_gguf(path)
    assert info.value.path == path
    assert str(info.value) == f"{path}: {info.value.problem}"
    assert issubclass(GGUFValidationError, ValueError)


@pytest.mark.parametrize(("margin", "accepted"), [(0, True), (1, True), (-1, False)])
def test_max_file_bytes(tmp_path: Path, margin: int, accepted: bool) -> None:
    path = build_good_model(tmp_path / "m.gguf")
    limit = path.stat().st_size + margin
    if accepted:
        validate_gguf(path, max_file_bytes=limit)
    else:
        with pytest.raises(GGUFValidationError, match="more than the limit"):
            validate_gguf(path, max_file_bytes=limit)


def _sparse_model(path: Path, n_tokens: int, shapes: list[tuple[int, int]], missing_bytes: int = 0) -> Path:
    """A header declaring big F32 tensors, extended to full size as a sparse file (no data written)."""
    w = GGUFWriter(path, "llama")
    add_hparams(w, "llama")
    w.add_token_list([f"token{i}" for i in range(n_tokens)])
    w.add_token_types([1] * n_tokens)
    for i, (rows, cols) in enumerate(shapes):
        w.add_tensor_info(f"blk.{i}.ffn_up.weight", (rows, cols), np.dtype(np.float32), rows * cols * 4)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    assert w.fout is not None
    header_end = w.fout[0].tell()
    w.close()
    size = -(-header_end // 32) * 32 + sum(-(-(r * c * 4) // 32) * 32 for r, c in shapes)
    os.truncate(path, size - missing_bytes)
    return path


def test_big_sparse_file_reads_only_the_header(tmp_path: Path) -> None:
    shapes = [(1 << 20, 1024), (4096, 4096)]  # 4 GiB + 64 MiB declared
    path = _sparse_model(tmp_path / "big.gguf", 100_000, shapes)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        summary = validate_gguf(path)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary.file_size > 4 << 30
    assert summary.kv["tokenizer.ggml.tokens"] == GGUFOmitted("array[string]", 100_000)
    assert elapsed < 5, f"took {elapsed:.1f}s"
    assert peak < 16 << 20, f"peak memory {peak} bytes"


def test_big_sparse_file_missing_its_last_byte(tmp_path: Path) -> None:
    path = _sparse_model(tmp_path / "big.gguf", 10, [(1 << 20, 1024)], missing_bytes=1)
    with pytest.raises(GGUFValidationError, match=r"data ends at byte \d+ but the file has \d+ bytes"):
        validate_gguf(path)


@pytest.fixture
def split_model(tmp_path: Path) -> list[Path]:
    w = GGUFWriter(tmp_path / "model.gguf", "llama", split_max_tensors=2)
    w.add_name("split")
    add_hparams(w, "llama")
    for i in range(4):
        w.add_tensor(f"blk.{i}.attn_q.weight", np.ones((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return sorted(tmp_path.glob("model-*-of-*.gguf"))


def test_split_model_is_validated_shard_by_shard(split_model: list[Path]) -> None:
    assert [p.name for p in split_model] == ["model-00001-of-00002.gguf", "model-00002-of-00002.gguf"]
    summary = validate_gguf(split_model[0])
    assert summary.tensor_count == 4
    assert summary.shards == tuple(split_model)
    assert summary.file_size == sum(p.stat().st_size for p in split_model)


def test_split_model_needs_its_first_shard(split_model: list[Path]) -> None:
    with pytest.raises(GGUFValidationError, match="this is shard 2 of 2; give the first shard"):
        validate_gguf(split_model[1])


def test_split_model_with_a_missing_shard(split_model: list[Path]) -> None:
    split_model[1].unlink()
    with pytest.raises(GGUFValidationError, match=r"shard 2 of 2 is missing: model-00002-of-00002\.gguf"):
        validate_gguf(split_model[0])


def test_split_model_with_a_bad_shard_names_the_shard(split_model: list[Path]) -> None:
    data = split_model[1].read_bytes()
    split_model[1].write_bytes(data[:-100])
    with pytest.raises(GGUFValidationError) as info:
        validate_gguf(split_model[0])
    assert info.value.path == split_model[1]
    assert "data ends at byte" in info.value.problem


def test_split_model_renamed(split_model: list[Path]) -> None:
    renamed = split_model[0].with_name("model.gguf")
    split_model[0].rename(renamed)
    with pytest.raises(GGUFValidationError, match=r"does not end in -00001-of-00002\.gguf"):
        validate_gguf(renamed)


def test_split_adapter_is_refused(split_model: list[Path]) -> None:
    with pytest.raises(GGUFValidationError, match="cannot be split"):
        validate_gguf(split_model[0], kind="adapter")


@pytest.fixture(scope="module")
def fuzz_seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("fuzz-seeds")
    return {
        "model": build_good_model(directory / "m.gguf").read_bytes(),
        "adapter": build_good_adapter(directory / "a.gguf").read_bytes(),
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_files_raise_only_validation_errors(
    data: st.DataObject, fuzz_seeds: dict[str, bytes], tmp_path: Path
) -> None:
    kind = data.draw(st.sampled_from(["model", "adapter"]))
    blob = bytearray(fuzz_seeds[kind])
    for _ in range(data.draw(st.integers(0, 6))):
        offset = data.draw(st.integers(0, len(blob) - 1))
        if data.draw(st.booleans()):
            blob[offset] = data.draw(st.integers(0, 255))
        else:  # a whole little-endian word: counts, lengths and offsets are where parsers break
            value = data.draw(st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1]))
            word = value.to_bytes(8, "little")
            blob[offset : offset + 8] = word[: len(blob) - offset]
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(blob))))
    path = tmp_path / "fuzzed.gguf"
    path.write_bytes(bytes(blob if cut is None else blob[:cut]))
    try:
        summary = validate_gguf(path, kind=kind)
    except GGUFValidationError as exc:
        assert str(exc).startswith(f"{path}: ")
    else:
        assert isinstance(summary, GGUFSummary)
