"""Settings resolve in one place: flags > HERMESD_* environment > config file > defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hermesd.server.settings import ConfigFileError, Settings, load_settings


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "hermesd.toml"
    cfg.write_text('port = 9001\nctx = 1024\nthink = true\nserved-model-name = ["from-file"]\n')
    monkeypatch.setenv("HERMESD_CTX", "2048")
    monkeypatch.setenv("HERMESD_API_KEY", "k1,k2")
    s = load_settings({"port": 9002}, cfg)
    assert s.port == 9002  # flag beats file
    assert s.ctx == 2048  # environment beats file
    assert s.think is True  # file beats default
    assert s.served_model_name == ["from-file"]
    assert s.all_api_keys() == ["k1", "k2"]
    assert s.redacted()["api_key"] == ["***", "***"]


def test_api_key_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# team keys\nalpha\n\nbeta\n")
    assert load_settings({"api_key_file": keys, "api_key": ["gamma"]}).all_api_keys() == [
        "gamma",
        "alpha",
        "beta",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [("port = [", "hermesd.toml"), ("no_such_setting = 1", "unknown setting(s): no_such_setting")],
)
def test_bad_config_file_names_the_file(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "hermesd.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigFileError, match=re.escape(message)):
        load_settings({}, cfg)


def test_values_are_range_checked() -> None:
    with pytest.raises(ValueError, match="parallel"):
        load_settings({"parallel": 0})


def test_environment_file_documents_every_setting() -> None:
    env = (Path(__file__).parents[2] / "systemd" / "hermesd.env").read_text()
    documented = set(re.findall(r"HERMESD_([A-Z_]+)=", env))
    assert documented == {n.upper() for n in Settings.model_fields}


def test_an_empty_environment_value_means_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    # an uncommented `HERMESD_X=` line in the systemd env file must not break the daemon's start
    monkeypatch.setenv("HERMESD_FLASH_ATTN", "")
    monkeypatch.setenv("HERMESD_THREADS_BATCH", "")
    s = load_settings({})
    assert s.flash_attn is None and s.threads_batch is None


@pytest.mark.parametrize(("flags", "expected"), [({}, None), ({"flash_attn": False}, False)])
def test_flash_attention_defaults_to_llama_cpp_auto(flags: dict[str, bool], expected: bool | None) -> None:
    assert load_settings(flags).flash_attn is expected
