"""GGUF reading and the planner's arithmetic, checked against a real tiny GGUF and llama.cpp itself.

llama.cpp runs in child processes: it owns a process-wide log callback, and an assertion failure
inside it aborts the whole process.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import gguf
import pytest

from hermesd.models.catalog import Catalog, CatalogFile, QuantEntry, load_catalog
from hermesd.models.gguf_info import GgufError, read_gguf_info, shard_paths
from hermesd.runtime.hardware import hardware_from_dict
from hermesd.runtime.plan_verify import verify_plan
from hermesd.runtime.planner import Plan, PlanRequest, plan
from tests.fixtures.bad_ggufs import resplit_gguf
from tests.fixtures.llama_alloc import llama_allocations
from tests.fixtures.tiny_models import tiny_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny() -> Path:
    return tiny_model("llama", "Q8_0")


def test_tensor_bytes_match_the_file_and_ggml_block_sizes(tiny: Path) -> None:
    info = read_gguf_info(tiny)
    reader = gguf.GGUFReader(tiny)
    # Independently: each tensor's bytes from its element count and ggml's block size.
    expected = 0
    for t in reader.tensors:
        block, type_size = gguf.GGML_QUANT_SIZES[t.tensor_type]
        expected += int(t.n_elements) // block * type_size
    assert info.tensor_bytes == expected
    assert info.file_bytes == tiny.stat().st_size
    assert 0 < info.file_bytes - info.tensor_bytes < 256 * 1024  # header, vocabulary, alignment
    assert (info.arch, info.file_type, info.block_count) == ("llama", "Q8_0", 2)
    assert len(info.layer_bytes) == 2 and all(b > 0 for b in info.layer_bytes)
    assert info.token_embd_bytes > 0 and info.output_bytes > 0 and not info.tied_embeddings
    layout = info.layout()
    assert layout.total == info.tensor_bytes and layout.source == "gguf"


def _tiny_catalog(info_path: Path) -> tuple[Catalog, dict[tuple[str, str], Any]]:
    info = read_gguf_info(info_path)
    base = load_catalog(overlay=Path("/nonexistent"))
    entry = QuantEntry("Q8_0", "local/tiny", (CatalogFile(info_path.name, info.file_bytes),), "exact")
    variant = replace(info.as_variant("hermes-4-tiny"), size_rank=1, quants=(entry,))
    catalog = Catalog(variants=(variant,), quant_types=base.quant_types, by_id={variant.id: variant})
    return catalog, {(variant.id, "Q8_0"): info.layout()}


def test_plan_verified_by_a_dry_run(tiny: Path) -> None:
    catalog, layouts = _tiny_catalog(tiny)
    hw = hardware_from_dict({"gpus": [], "ram_total_mib": 4096})
    result = plan(hw, catalog, PlanRequest(ctx=4096, parallel=2, local_layouts=layouts))
    assert isinstance(result, Plan)
    report = verify_plan(result, tiny)
    assert report.available, report.note
    by_name = {m.name: m for m in report.measurements}
    assert by_name["weights"].error == 0
    assert by_name["KV cache"].error == 0
    compute_error = by_name["compute buffers"].error
    assert compute_error is not None and abs(compute_error) < 0.2
    assert any("estimate error" in line for line in report.lines())


def test_split_files_are_read_across_all_shards(tiny: Path, tmp_path: Path) -> None:
    parts = resplit_gguf(tiny, tmp_path / "tiny-Q8_0.gguf", max_tensors=8)
    assert len(parts) >= 3 and parts[0].name.endswith(f"-00001-of-{len(parts):05d}.gguf")
    whole, split = read_gguf_info(tiny), read_gguf_info(parts[1])
    assert shard_paths(parts[-1]) == tuple(parts)
    assert (split.layer_bytes, split.token_embd_bytes, split.output_bytes) == (
        whole.layer_bytes,
        whole.token_embd_bytes,
        whole.output_bytes,
    )
    # llama.cpp, given the first shard, finds the others and counts the same weights.
    assert llama_allocations(parts[0]).model_size == whole.tensor_bytes
    parts[-1].unlink()
    with pytest.raises(GgufError, match="split GGUF is incomplete"):
        read_gguf_info(parts[0])


def test_not_a_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(GgufError, match=r"model\.gguf: not a GGUF file"):
        read_gguf_info(bad)
