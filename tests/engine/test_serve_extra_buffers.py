"""`hermesd serve` resolves llama.cpp's extra CPU buffer types: on by default (weight repacking, as
llama-server has it) unless the CPU reports AMX; a flag or setting wins either way. For the model and
its draft alike."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("flag", "cpu", "expected"),
    [(None, "avx2", True), (None, "amx_tile", False), (True, "amx_tile", True), (False, "avx2", False)],
)
def test_serve_resolves_the_extra_buffers_setting(
    flag: bool | None, cpu: str, expected: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from hermesd.cli import serve
    from hermesd.server.settings import load_settings

    monkeypatch.setattr(serve, "read_cpu_features", lambda: (cpu,))
    flags = {} if flag is None else {"cpu_extra_buffers": flag}
    config = serve.engine_config(load_settings(flags), tmp_path / "m.gguf", draft_path=tmp_path / "d.gguf")
    assert config.model.cpu_extra_buffers is expected
    assert config.draft is not None and config.draft.cpu_extra_buffers is expected
