"""Check a plan against llama.cpp itself, for a model file that is on this machine.

llama-cpp-python 0.3.36 binds `llama_model_params.no_alloc` ("only load metadata and simulate
memory allocations"). A load with it reads the header only; `llama_model_size` then gives the bytes
of every weight as llama.cpp counts them, and creating a context logs the compute buffer llama.cpp
reserves on each device ("<dev> compute buffer size = N MiB"). In this mode llama.cpp reports the
KV buffer as 0 bytes, so the KV cache is recomputed from the hyperparameters llama.cpp read (and the
formula itself is checked against a real allocation in the tests). `llama_get_memory_breakdown`,
llama-server's source for `--fit`, is C++ only and not reachable through ctypes.

The dry run happens in a child process: llama.cpp aborts the whole process on a failed assertion
(e.g. no_alloc together with mmap), and `hermesd plan` must survive that.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hermesd.models.gguf_validate import GGUFValidationError, validate_gguf
from hermesd.runtime.engine.context_settings import ContextSettings
from hermesd.runtime.memory import kv_row_bytes
from hermesd.runtime.planner import Plan

log = logging.getLogger(__name__)

_COMPUTE_RE = re.compile(r"(\S+) compute buffer size =\s+([\d.]+) MiB")
_KV_RE = re.compile(r"(\S+) KV buffer size =\s+([\d.]+) MiB")


@dataclass(frozen=True)
class Measurement:
    name: str
    estimated_bytes: int
    measured_bytes: int | None
    how: str

    @property
    def error(self) -> float | None:
        """Relative error of the estimate (positive: the plan reserved more than llama.cpp needs)."""
        if not self.measured_bytes:
            return None
        return (self.estimated_bytes - self.measured_bytes) / self.measured_bytes


@dataclass(frozen=True)
class VerifyReport:
    available: bool
    note: str
    measurements: tuple[Measurement, ...] = ()

    def lines(self) -> list[str]:
        if not self.available:
            return [f"dry run skipped: {self.note}"]
        out = [f"llama.cpp dry run: {self.note}"]
        for m in self.measurements:
            err = m.error
            got = "n/a" if m.measured_bytes is None else f"{m.measured_bytes / 2**30:.3f} GiB"
            pct = "" if err is None else f" (estimate error {err:+.1%})"
            out.append(f"{m.name}: plan {m.estimated_bytes / 2**30:.3f} GiB, llama.cpp {got}{pct} [{m.how}]")
        return out


def verify_plan(plan: Plan, model_path: Path, *, timeout_s: float = 120.0) -> VerifyReport:
    """Load `model_path` in a dry run with the plan's settings and compare llama.cpp's numbers."""
    try:
        validate_gguf(model_path, kind="model")  # llama.cpp never reads an unchecked file
    except GGUFValidationError as exc:
        return VerifyReport(False, f"refusing to give llama.cpp a damaged or hostile model file: {exc}")
    request = {
        "path": str(model_path),
        "n_gpu_layers": plan.n_gpu_layers,
        "tensor_split": list(plan.tensor_split),
        "settings": asdict(plan.settings),
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "hermesd.runtime.plan_verify"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return VerifyReport(False, f"llama.cpp did not finish the dry run in {timeout_s:.0f} s")
    result = _last_json(proc.stdout)
    if result is None:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return VerifyReport(False, f"llama.cpp dry run failed: {tail[0]}")
    if not result.get("available", False):
        return VerifyReport(False, str(result.get("note", "dry run unavailable")))
    return _compare(plan, result)


def _compare(plan: Plan, r: dict[str, Any]) -> VerifyReport:
    e = plan.estimate
    measured_compute = sum(r["compute_mib"].values()) * 2**20 if r["compute_mib"] else None
    kv_measured = sum(r["kv_mib"].values()) * 2**20 if any(r["kv_mib"].values()) else None
    settings = plan.settings
    kv_from_hparams = (
        r["n_layer"] * 2 * kv_row_bytes(settings.kv_type, r["n_head_kv"] * r["head_dim"]) * settings.kv_cells
    )
    return VerifyReport(
        True,
        f"{r['path']} ({r['n_params'] / 1e9:.2f} B parameters)",
        (
            Measurement("weights", e.weights_bytes, r["model_size"], "llama_model_size"),
            Measurement(
                "KV cache",
                e.kv_bytes,
                kv_measured or kv_from_hparams,
                "KV buffer" if kv_measured else "llama.cpp hyperparameters (no_alloc reports 0)",
            ),
            Measurement(
                "compute buffers",
                e.compute_bytes,
                int(measured_compute) if measured_compute else None,
                "sum of " + ", ".join(f"{dev} {mib:.1f} MiB" for dev, mib in r["compute_mib"].items()),
            ),
        ),
    )


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


# -- the child process


def _dry_run(req: dict[str, Any]) -> dict[str, Any]:
    import ctypes

    import llama_cpp.llama_cpp as ll

    field_names = {name for name, *_ in ll.llama_model_params._fields_}
    if "no_alloc" not in field_names:
        return {"available": False, "note": "this llama-cpp-python has no no_alloc model parameter"}
    lines: list[str] = []

    @ll.llama_log_callback
    def collect(_level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", "replace"))

    ll.llama_log_set(collect, ctypes.c_void_p(0))
    ll.llama_backend_init()
    params = ll.llama_model_default_params()
    params.no_alloc = True
    params.load_mode = ll.LLAMA_LOAD_MODE_NONE  # no_alloc with mmap trips an assertion
    params.use_extra_bufts = False
    params.n_gpu_layers = int(req["n_gpu_layers"])
    split = (ctypes.c_float * 16)(*req["tensor_split"][:16])
    if req["tensor_split"]:
        params.tensor_split = split
    model = ll.llama_model_load_from_file(req["path"].encode(), params)
    if not model:
        return {"available": False, "note": f"llama.cpp could not read {req['path']}"}
    cparams = ContextSettings(**req["settings"]).fill(ll.llama_context_default_params())
    lines.clear()
    ctx = ll.llama_init_from_model(model, cparams)
    if not ctx:
        return {"available": False, "note": "llama.cpp could not create the context in the dry run"}
    n_head = max(int(ll.llama_model_n_head(model)), 1)

    def meta(key: str) -> str | None:
        buf = ctypes.create_string_buffer(256)
        n = ll.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
        return buf.value.decode() if n >= 0 else None

    arch = meta("general.architecture") or ""
    key_length = meta(f"{arch}.attention.key_length")
    head_dim = int(key_length) if key_length else int(ll.llama_model_n_embd(model)) // n_head
    result = {
        "available": True,
        "path": req["path"],
        "model_size": int(ll.llama_model_size(model)),
        "n_params": int(ll.llama_model_n_params(model)),
        "n_layer": int(ll.llama_model_n_layer(model)),
        "n_head_kv": int(ll.llama_model_n_head_kv(model)),
        "head_dim": head_dim,
        "n_ctx": int(ll.llama_n_ctx(ctx)),
        "compute_mib": _per_device(_COMPUTE_RE, lines),
        "kv_mib": _per_device(_KV_RE, lines),
    }
    ll.llama_free(ctx)
    ll.llama_model_free(model)
    return result


def _per_device(pattern: re.Pattern[str], lines: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in lines:
        m = pattern.search(line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def main() -> None:
    req = json.loads(sys.stdin.read())
    print(json.dumps(_dry_run(req)), flush=True)


if __name__ == "__main__":
    main()
