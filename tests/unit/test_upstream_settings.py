"""The settings of `hermesd serve --upstream`: one URL, a key from the environment or a file (never a
flag, never logged), and no local model beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from hermesd.cli.settings_options import settings_options
from hermesd.server.settings import load_settings


def test_the_key_comes_from_the_environment_and_is_not_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERMESD_UPSTREAM_KEY", "s3cret")
    s = load_settings({"upstream": "http://10.0.0.1:8000"})
    assert s.upstream_api_key() == "s3cret"
    assert "s3cret" not in str(s.redacted()) and s.redacted()["upstream_key"] == "***"


def test_the_key_file_gives_its_first_key_line(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("# vLLM's --api-key\n\n  abc123  \nsecond\n")
    s = load_settings({"upstream": "https://gpu-head/v1", "upstream_key_file": key})
    assert s.upstream_api_key() == "abc123"
    key.write_text("# nothing but a comment\n")
    with pytest.raises(ValueError, match="no key"):
        s.upstream_api_key()


def test_no_key_at_all_is_none() -> None:
    assert load_settings({"upstream": "http://h:1"}).upstream_api_key() is None


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ({"upstream": "gpu-head:8000"}, "not an http:// or https:// URL"),
        ({"upstream": "http://h:1", "model": Path("m.gguf")}, "exclude each other"),
    ],
)
def test_bad_upstream_settings_are_refused(flags: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        load_settings(flags)


def test_the_key_is_no_flag_but_the_rest_are() -> None:
    command = settings_options(lambda **kw: None)
    flags = {opt for p in command.__click_params__ for opt in p.opts}  # type: ignore[attr-defined]
    assert "--upstream-key" not in flags
    assert {"--upstream", "--upstream-key-file", "--upstream-model", "--upstream-timeout"} <= flags
