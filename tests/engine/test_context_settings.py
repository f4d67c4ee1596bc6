"""The one description of the llama.cpp context (runtime/engine/context_settings.py) against llama.cpp.

For every tiny fixture model and the settings the planner budgets (its default context and slots, and
the KV types and flash-attention choices a user can set), llama.cpp allocates exactly the KV cache the
planner's arithmetic counts, and a compute buffer close to the estimate. The contexts are created the
way serve creates them (`ContextSettings.fill`), in a child process: llama.cpp owns a process-wide
log callback, and its log is where it reports what it allocated.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hermesd.models.gguf_info import read_gguf_info
from hermesd.runtime.engine.context_settings import KV_TYPE_NAMES, ContextSettings
from hermesd.runtime.memory import MIB, compute_bytes, kv_bytes
from hermesd.runtime.planner import DEFAULT_CTX, MAX_AUTO_SLOTS, PlanRequest, context_settings
from tests.fixtures.llama_alloc import llama_allocations
from tests.fixtures.tiny_models import tiny_model

pytestmark = pytest.mark.slow

# beside the planner's own default: every KV type, flash attention auto/on/off, padding, micro-batches
CHOICES = [
    ContextSettings(ctx=2048, parallel=4),
    ContextSettings(ctx=1000, parallel=3, kv_type="bf16", flash_attn=False),  # 3000 cells become 3072
    ContextSettings(ctx=4096, parallel=1, kv_type="q8_0", flash_attn=True),
    ContextSettings(ctx=4096, parallel=1, batch_size=128, flash_attn=True),
    ContextSettings(ctx=512, parallel=2, kv_type="q4_0"),
    ContextSettings(ctx=768, parallel=2, kv_type="f32", flash_attn=False),
]


def test_every_kv_type_is_exercised() -> None:
    assert {s.kv_type for s in CHOICES} == set(KV_TYPE_NAMES)


@pytest.mark.parametrize("kind", ["qwen3", "llama"])
def test_planned_kv_bytes_equal_what_llama_cpp_allocates(kind: str) -> None:
    path = tiny_model(kind)  # type: ignore[arg-type]
    info = read_gguf_info(path)
    variant = info.as_variant()
    settings = [context_settings(PlanRequest(parallel=MAX_AUTO_SLOTS), DEFAULT_CTX), *CHOICES]
    report = llama_allocations(path, settings)
    # weights: llama.cpp's count equals the tensor bytes read from the file
    assert report.model_size == info.tensor_bytes
    for s, got in zip(settings, report.runs, strict=True):
        assert got.unified, s
        # llama.cpp prints MiB with two decimals
        assert kv_bytes(variant, s) / MIB == pytest.approx(got.kv_mib, abs=0.006), (s, got)
        estimate = compute_bytes(variant, s, with_output=True) / MIB
        assert estimate == pytest.approx(got.compute_mib, rel=0.2), (s, got)


def test_serve_logs_the_planned_and_allocated_memory(tmp_path: Path) -> None:
    """The start-up line of a real `hermesd serve`: the plan's KV figure equals the allocation."""
    import re

    from tests.e2e.server_process import run_server

    with run_server(
        tiny_model("llama"), tmp_path, "--parallel", "3", "--ctx", "1000", "--kv-type", "bf16"
    ) as srv:
        line = next(x for x in srv.log().splitlines() if "memory (MiB): KV cache planned" in x)
    m = re.search(
        r"KV cache planned ([\d.]+), allocated ([\d.]+); "
        r"compute buffers planned ([\d.]+), allocated ([\d.]+)",
        line,
    )
    assert m is not None, line
    kv_planned, kv_allocated, compute_planned, compute_allocated = map(float, m.groups())
    assert kv_planned == kv_allocated > 0
    assert compute_planned == pytest.approx(compute_allocated, rel=0.2)
    assert "(3 x 1000 tokens, bf16 KV)" in line
