"""GGUF reading and the planner's arithmetic, checked against a real tiny GGUF and llama.cpp itself.

llama.cpp runs in child processes: it owns a process-wide log callback, and an assertion failure
inside it aborts the whole process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import gguf
import pytest

from hermesd.models.catalog import Catalog, CatalogFile, QuantEntry, load_catalog
from hermesd.models.gguf_info import GgufError, read_gguf_info, shard_paths
from hermesd.runtime.hardware import hardware_from_dict
from hermesd.runtime.memory import MIB, compute_buffer_bytes, kv_bytes_per_layer, kv_cells
from hermesd.runtime.plan_verify import verify_plan
from hermesd.runtime.planner import Plan, PlanRequest, plan
from tests.fixtures.tiny_models import tiny_model

pytestmark = pytest.mark.slow

REPORT_SCRIPT = textwrap.dedent(
    """
    import ctypes, json, re, sys
    import llama_cpp.llama_cpp as ll
    req = json.loads(sys.argv[1])
    lines = []
    @ll.llama_log_callback
    def cb(level, text, user):
        lines.append(text.decode("utf-8", "replace"))
    ll.llama_log_set(cb, ctypes.c_void_p(0))
    ll.llama_backend_init()
    mp = ll.llama_model_default_params()
    mp.use_extra_bufts = False
    model = ll.llama_model_load_from_file(req["path"].encode(), mp)
    out = {"model_size": ll.llama_model_size(model), "runs": []}
    for run in req["runs"]:
        cp = ll.llama_context_default_params()
        cp.n_ctx = run["n_ctx"]; cp.n_seq_max = run["n_seq"]; cp.n_batch = run["n_ubatch"]
        cp.n_ubatch = run["n_ubatch"]; cp.flash_attn_type = 1 if run["flash_attn"] else 0
        cp.type_k = cp.type_v = {"f16": 1, "q8_0": 8}[run["kv_type"]]
        lines.clear()
        ctx = ll.llama_init_from_model(model, cp)
        text = "".join(lines)
        kv = sum(float(x) for x in re.findall(r"KV buffer size =\\s+([\\d.]+) MiB", text))
        comp = sum(float(x) for x in re.findall(r"compute buffer size =\\s+([\\d.]+) MiB", text))
        out["runs"].append({**run, "kv_mib": kv, "compute_mib": comp})
        ll.llama_free(ctx)
    print(json.dumps(out))
    """
)


def llama_report(path: Path, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """What llama.cpp itself allocates (real allocation, mmap'd weights) for each context config."""
    proc = subprocess.run(
        [sys.executable, "-c", REPORT_SCRIPT, json.dumps({"path": str(path), "runs": runs})],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


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


def test_arithmetic_against_llama_cpp(tiny: Path) -> None:
    info = read_gguf_info(tiny)
    variant = info.as_variant()
    runs = [
        {"n_ctx": 8192, "n_seq": 2, "n_ubatch": 512, "flash_attn": True, "kv_type": "f16"},
        {"n_ctx": 16384, "n_seq": 1, "n_ubatch": 512, "flash_attn": True, "kv_type": "q8_0"},
        {"n_ctx": 4096, "n_seq": 1, "n_ubatch": 128, "flash_attn": True, "kv_type": "f16"},
        {"n_ctx": 4096, "n_seq": 1, "n_ubatch": 512, "flash_attn": False, "kv_type": "f16"},
    ]
    report = llama_report(tiny, runs)
    # Weights: llama.cpp's count equals the tensor bytes read from the file.
    assert report["model_size"] == info.tensor_bytes
    for run in report["runs"]:
        cells = kv_cells(run["n_ctx"], 1)  # n_ctx already covers all sequences here
        kv = kv_bytes_per_layer(variant, cells, run["kv_type"]) * variant.layers
        assert kv / MIB == pytest.approx(run["kv_mib"], abs=0.006), run  # llama.cpp prints 2 decimals
        per_seq = kv_cells(run["n_ctx"] // run["n_seq"], 1)  # attention spans one sequence's stream
        compute = compute_buffer_bytes(
            variant, n_ubatch=run["n_ubatch"], cells=per_seq, flash_attn=run["flash_attn"], with_output=True
        )
        assert compute / MIB == pytest.approx(run["compute_mib"], rel=0.15), run


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


def resplit(src: Path, dst: Path, max_tensors: int) -> list[Path]:
    """Write `src` again as a split GGUF (llama.cpp's gguf-split layout) and return the parts."""
    reader = gguf.GGUFReader(src)
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    writer = gguf.GGUFWriter(dst, arch, split_max_tensors=max_tensors)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub)
    for t in reader.tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(t.data)
    writer.close()
    return writer.format_shard_names(dst)


def test_split_files_are_read_across_all_shards(tiny: Path, tmp_path: Path) -> None:
    parts = resplit(tiny, tmp_path / "tiny-Q8_0.gguf", max_tensors=8)
    assert len(parts) >= 3 and parts[0].name.endswith(f"-00001-of-{len(parts):05d}.gguf")
    whole, split = read_gguf_info(tiny), read_gguf_info(parts[1])
    assert shard_paths(parts[-1]) == tuple(parts)
    assert (split.layer_bytes, split.token_embd_bytes, split.output_bytes) == (
        whole.layer_bytes,
        whole.token_embd_bytes,
        whole.output_bytes,
    )
    # llama.cpp, given the first shard, finds the others and counts the same weights.
    assert llama_report(parts[0], [])["model_size"] == whole.tensor_bytes
    parts[-1].unlink()
    with pytest.raises(GgufError, match="split GGUF is incomplete"):
        read_gguf_info(parts[0])


def test_not_a_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(GgufError, match=r"model\.gguf: not a GGUF file"):
        read_gguf_info(bad)
