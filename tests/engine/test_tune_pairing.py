"""The pairing check on the tiny test models: each tiny GGUF and the Hugging Face config.json and
tokenizer.json it was built from (its cache folder) are one network; a changed layer count, head
count, vocabulary, token or RoPE theta is refused naming that field; and `hermesd tune` refuses a
mismatched pair before it trains (no weights exist in the folder, so a run that got past the check
would fail otherwise). Reading only: no training here."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hermesd.cli.tune import tune_command
from hermesd.models.pairing import PairingError, check_pair, gguf_facts, hf_facts_from_folder
from tests.fixtures.tiny_models import tiny_model, trained_dir
from tests.fixtures.tune_data import zephyr_jsonl


def hf_copy(kind: str, dest: Path, edit: Callable[[dict[str, Any], dict[str, Any]], None] | None) -> Path:
    """The tiny model's config.json and tokenizer.json (no weights), edited."""
    dest.mkdir(parents=True, exist_ok=True)
    source = trained_dir(kind)
    config = json.loads((source / "config.json").read_text())
    tok = json.loads((source / "tokenizer.json").read_text())
    if edit is not None:
        edit(config, tok)
    (dest / "config.json").write_text(json.dumps(config))
    (dest / "tokenizer.json").write_text(json.dumps(tok))
    return dest


def _layers(c: dict[str, Any], _: dict[str, Any]) -> None:
    c["num_hidden_layers"] += 1


def _heads(c: dict[str, Any], _: dict[str, Any]) -> None:
    c["num_attention_heads"] *= 2


def _vocab(c: dict[str, Any], _: dict[str, Any]) -> None:
    c["vocab_size"] += 8


def _token(_: dict[str, Any], t: dict[str, Any]) -> None:
    t["added_tokens"][0]["content"] = "<thinking>"


def _theta(c: dict[str, Any], _: dict[str, Any]) -> None:
    c["rope_parameters"]["rope_theta"] = 10000.0


@pytest.mark.parametrize("kind", ["qwen3", "llama"])
def test_each_tiny_model_pairs_with_its_own_config_and_tokenizer(kind: str) -> None:
    path = tiny_model(kind)
    check_pair(path, gguf_facts(path), kind, hf_facts_from_folder(trained_dir(kind)))


def _original() -> tuple[dict[str, Any], dict[str, Any]]:
    source = trained_dir("qwen3")
    return json.loads((source / "config.json").read_text()), json.loads(
        (source / "tokenizer.json").read_text()
    )


# the expected message from the unedited config and tokenizer: the tiny vocabulary's size and ids
# come from training its tokenizer, so they are read, not pinned
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_layers, lambda c, t: "layer count differs (GGUF 2, Hugging Face 3)"),
        (_heads, lambda c, t: "attention heads differs (GGUF 4, Hugging Face 8)"),
        (
            _vocab,
            lambda c, t: (
                f"vocabulary size differs (GGUF {c['vocab_size']}, Hugging Face {c['vocab_size'] + 8})"
            ),
        ),
        (
            _token,
            lambda c, t: (
                f"token {t['added_tokens'][0]['id']} differs (GGUF '<think>', Hugging Face '<thinking>')"
            ),
        ),
        (_theta, lambda c, t: "RoPE theta differs (GGUF 1e+06, Hugging Face 10000)"),
    ],
)
def test_a_changed_field_is_refused_by_name(tmp_path: Path, edit: Any, message: Any) -> None:
    path = tiny_model("qwen3")
    expected = message(*_original())
    folder = hf_copy("qwen3", tmp_path / "hf", edit)
    with pytest.raises(PairingError) as err:
        check_pair(path, gguf_facts(path), "hf", hf_facts_from_folder(folder))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_the_other_architecture_is_refused(tmp_path: Path) -> None:
    path = tiny_model("qwen3")
    with pytest.raises(PairingError, match=r"architecture differs \(GGUF qwen3, Hugging Face llama\)"):
        check_pair(path, gguf_facts(path), "hf", hf_facts_from_folder(trained_dir("llama")))


def test_tune_refuses_a_mismatched_pair_before_training(tmp_path: Path) -> None:
    folder = hf_copy("qwen3", tmp_path / "hf", _layers)
    result = CliRunner().invoke(
        tune_command,
        [
            "--base",
            str(folder),
            "--base-gguf",
            str(tiny_model("qwen3")),
            "--data",
            str(zephyr_jsonl(tmp_path)),
            "--name",
            "mismatch",
            "--state-dir",
            str(tmp_path / "state"),
            "--no-load",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 1, result.output
    assert "are not the same network: layer count differs (GGUF 2, Hugging Face 3)" in result.output
    assert "eval loss" not in result.output and "device:" not in result.output
    assert not (tmp_path / "state" / "runs" / "mismatch" / "metrics.jsonl").exists()
