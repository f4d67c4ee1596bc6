"""The check `hermesd setup-gpu` runs in a fresh process after installing a build, here against the
CPU build: the tiny model it writes loads, decodes 8 tokens, and a GPU that is not there is reported."""

from __future__ import annotations

import json
import subprocess
import sys


def selftest(*args: str) -> tuple[int, dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-m", "hermesd.runtime.engine.gpu_selftest", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_cpu_build_passes_when_no_gpu_is_expected() -> None:
    code, result = selftest("--expect-gpus", "0")
    assert code == 0 and result["ok"] is True
    tokens = result["cpu_tokens"]
    assert isinstance(tokens, list) and len(tokens) == 8
    assert "backends CPU" in str(result["engine"])


def test_a_missing_gpu_fails_the_check() -> None:
    code, result = selftest("--expect-gpus", "2")
    assert code == 1 and result["ok"] is False
    assert result["error"] == "the engine sees 0 GPU(s), 2 expected (backends: CPU)"
