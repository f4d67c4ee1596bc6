"""The validator's hyper-parameter rules held to llama.cpp: the files it refuses as aborting really
kill a llama.cpp process that loads them unchecked (in a child process, so the abort is observed)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hermesd.models.gguf_validate import GGUFValidationError, validate_gguf
from tests.fixtures.bad_ggufs import ABORTING_HPARAMS, with_hparams
from tests.fixtures.tiny_models import tiny_model
from tests.fixtures.tiny_train import Kind

# Loads a model the way the engine does, with no validator in front, and decodes one token.
_LOAD_AND_DECODE = (
    "import sys, llama_cpp\n"
    "llm = llama_cpp.Llama(model_path=sys.argv[1], vocab_only=False, n_ctx=64, verbose=True)\n"
    "llm.eval([llm.token_bos()])\n"
    "print('decoded')\n"
)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["llama", "qwen3"])
@pytest.mark.parametrize("case", [None, *ABORTING_HPARAMS])
def test_aborting_hparams_kill_llama_cpp_and_are_refused(
    tmp_path: Path, kind: Kind, case: str | None
) -> None:
    """The rule is not imaginary: llama.cpp itself aborts the process on these files (SIGABRT from a
    GGML_ASSERT), and the validator refuses them first. case=None is the unchanged model, which loads."""
    changes, problem = ABORTING_HPARAMS[case] if case else ({}, "")
    path = with_hparams(tiny_model(kind), tmp_path / f"{kind}-{case}.gguf", changes)
    r = subprocess.run(
        [sys.executable, "-c", _LOAD_AND_DECODE, str(path)], capture_output=True, text=True, timeout=120
    )
    if case is None:
        assert (r.returncode, r.stdout.strip()) == (0, "decoded"), r.stderr[-2000:]
        assert validate_gguf(path).architecture == kind
        return
    assert r.returncode == -signal.SIGABRT, (r.returncode, r.stderr[-2000:])
    assert "GGML_ASSERT" in r.stderr and "llama-model.cpp" in r.stderr, r.stderr[-2000:]
    with pytest.raises(GGUFValidationError) as info:
        validate_gguf(path)
    assert f"{kind}.{problem}" in info.value.problem
