"""One list of KV cache types: every flag and setting that takes one accepts exactly the types serve runs
(tests/engine/test_context_settings.py runs each of them in llama.cpp)."""

from __future__ import annotations

import typing

import click
import pytest

from hermesd.cli.plan import plan_command
from hermesd.cli.pull import pull_command
from hermesd.runtime.engine.context_settings import KV_CACHE_TYPES, KV_TYPE_NAMES, ContextSettings
from hermesd.server.settings import Settings


def choices(command: click.Command, flag: str) -> tuple[str, ...]:
    option = next(p for p in command.params if flag in getattr(p, "opts", ()))
    assert isinstance(option.type, click.Choice)
    return tuple(str(c) for c in option.type.choices)


# serve's flags are generated from the Settings fields (cli/settings_options.py): see the next test
@pytest.mark.parametrize("command", [plan_command, pull_command], ids=lambda c: c.name)
def test_every_kv_type_flag_takes_the_one_list(command: click.Command) -> None:
    assert set(choices(command, "--kv-type")) == set(KV_TYPE_NAMES) == set(KV_CACHE_TYPES)


def test_settings_take_the_one_list() -> None:
    annotation = Settings.model_fields["kv_type"].annotation
    assert set(typing.get_args(annotation)) == set(KV_TYPE_NAMES)
    assert "bf16" in KV_TYPE_NAMES  # plan accepted it before serve could run it


@pytest.mark.parametrize("kv_type", ["q8_0", "q4_0"])
def test_a_quantized_kv_cache_without_flash_attention_is_refused_everywhere(kv_type: str) -> None:
    with pytest.raises(ValueError, match="needs flash attention"):
        Settings(kv_type=kv_type, flash_attn=False)
    with pytest.raises(ValueError, match="needs flash attention"):
        ContextSettings(kv_type=kv_type, flash_attn=False)
    Settings(kv_type=kv_type)  # auto: llama.cpp turns flash attention on where it can
