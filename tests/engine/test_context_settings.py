"""The one description of the llama.cpp context (runtime/engine/context_settings.py) against llama.cpp.

For every tiny fixture model and the settings the planner budgets (its default context and slots, and
the KV types and flash-attention choices a user can set), llama.cpp allocates exactly the KV cache the
planner's arithmetic counts, and a compute buffer close to the estimate. The contexts are created the
way serve creates them (`ContextSettings.fill`), in a child process: llama.cpp owns a process-wide
log callback, and its log is where it reports what it allocated.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from hermesd.models.gguf_info import read_gguf_info
from hermesd.runtime.engine.context_settings import KV_TYPE_NAMES, ContextSettings
from hermesd.runtime.memory import MIB, compute_bytes, kv_bytes
from hermesd.runtime.planner import DEFAULT_CTX, MAX_AUTO_SLOTS, PlanRequest, context_settings
from tests.fixtures.tiny_models import tiny_model

pytestmark = pytest.mark.slow

ALLOCATE = textwrap.dedent(
    """
    import ctypes, json, re, sys
    import llama_cpp.llama_cpp as ll
    from hermesd.runtime.engine.context_settings import ContextSettings
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
    out = []
    for settings in req["settings"]:
        lines.clear()
        params = ContextSettings(**settings).fill(ll.llama_context_default_params())
        ctx = ll.llama_init_from_model(model, params)
        assert ctx, settings
        text = "".join(lines)
        out.append({
            "kv_mib": sum(float(x) for x in re.findall(r"KV buffer size =\\s+([\\d.]+) MiB", text)),
            "compute_mib": sum(float(x) for x in re.findall(r"compute buffer size =\\s+([\\d.]+) MiB", text)),
            "unified": "kv_unified            = true" in text,
        })
        ll.llama_free(ctx)
    print(json.dumps(out))
    """
)

# (ctx per sequence, parallel, KV type, flash attention) beside the planner's own default
CHOICES: list[tuple[int, int, str, bool | None]] = [
    (2048, 4, "f16", None),
    (1000, 3, "bf16", False),  # padding: 3000 cells become 3072
    (4096, 1, "q8_0", True),
    (512, 2, "q4_0", None),
    (768, 2, "f32", False),
]


def allocated(path: Path, settings: list[ContextSettings]) -> list[dict[str, Any]]:
    request = {"path": str(path), "settings": [asdict(s) for s in settings]}
    proc = subprocess.run(
        [sys.executable, "-c", ALLOCATE, json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_every_kv_type_is_exercised() -> None:
    assert {kv for _, _, kv, _ in CHOICES} == set(KV_TYPE_NAMES)


@pytest.mark.parametrize("kind", ["qwen3", "llama"])
def test_planned_kv_bytes_equal_what_llama_cpp_allocates(kind: str) -> None:
    path = tiny_model(kind)  # type: ignore[arg-type]
    variant = read_gguf_info(path).as_variant()
    planner_default = context_settings(PlanRequest(parallel=MAX_AUTO_SLOTS), DEFAULT_CTX)
    settings = [
        planner_default,
        *(
            context_settings(PlanRequest(ctx=c, parallel=p, kv_type=kv, flash_attn=fa is not False), c)
            if fa is not None
            else ContextSettings(ctx=c, parallel=p, kv_type=kv)
            for c, p, kv, fa in CHOICES
        ),
    ]
    for s, got in zip(settings, allocated(path, settings), strict=True):
        assert got["unified"], s
        # llama.cpp prints MiB with two decimals
        assert kv_bytes(variant, s) / MIB == pytest.approx(got["kv_mib"], abs=0.006), (s, got)
        estimate = compute_bytes(variant, s, with_output=True) / MIB
        assert estimate == pytest.approx(got["compute_mib"], rel=0.2), (s, got)


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
