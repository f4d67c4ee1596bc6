"""Training runs on the tiny model: checkpoints and --resume, Ctrl-C and kill -9, the run folder,
--plan and --dry-run on a real base, the base forms, and the CLI's error messages. (A GGUF base is
tokenized by llama.cpp in this process.) The pure parts of tune are in tests/unit/test_tune_config.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from click.testing import CliRunner, Result

from hermesd.cli.tune import tune_command
from hermesd.models.gguf_lora import check_adapter_file
from hermesd.models.gguf_validate import base_fingerprint
from hermesd.models.store import AdapterStore
from hermesd.runtime.tune.base import resolve_base
from hermesd.runtime.tune.config import TrainConfig
from tests.fixtures.tiny_models import tiny_model
from tests.fixtures.tune_data import (
    registered_other,
    tiny_tune_flags,
    tune_cmd,
    write_jsonl,
    zephyr_jsonl,
    zephyr_records,
)

# A short run: 6 rows, 2 per step -> 3 steps per epoch, 4 epochs -> 12 steps; dropout on, so a resume
# that lost torch's random state would not end where an uninterrupted run ends.
SHORT = tiny_tune_flags(batch_size=2, epochs=4, dropout=0.1, lr=5e-3)


def invoke(*args: Any) -> Result:
    return CliRunner().invoke(tune_command, [str(a) for a in args], catch_exceptions=False)


def base_args(tmp: Path, name: str = "zephyr", state: Path | None = None) -> list[str]:
    tmp.mkdir(parents=True, exist_ok=True)
    return [
        "--base", str(tiny_model("qwen3")), "--data", str(zephyr_jsonl(tmp)), "--name", name,
        "--state-dir", str(state or tmp / "state"), "--no-load",
    ]  # fmt: skip


def adapter_tensors(path: Path) -> dict[str, np.ndarray]:
    reader = gguf.GGUFReader(str(path))
    return {t.name: np.array(t.data) for t in reader.tensors}


# -- a whole run, interrupted and resumed


@pytest.mark.slow
def test_interrupted_run_resumes_and_ends_where_an_uninterrupted_run_ends(tmp_path: Path) -> None:
    whole = invoke(*base_args(tmp_path / "a"), *SHORT, "--save-every", 4)
    assert whole.exit_code == 0, whole.output
    assert "eval loss" in whole.output and "registered" in whole.output

    state = tmp_path / "b" / "state"
    first = invoke(*base_args(tmp_path / "b"), *SHORT, "--save-every", 4, "--stop-after", 5)
    assert first.exit_code == 0, first.output
    assert "stopped at step 5/12" in first.output and "--resume" in first.output
    assert AdapterStore(state).list() == []  # nothing registered by a stopped run
    assert json.loads((state / "runs/zephyr/checkpoint/state.json").read_text())["step"] == 5

    again = invoke(*base_args(tmp_path / "b"), *SHORT, "--save-every", 4)
    assert again.exit_code == 1 and "--resume" in again.output  # an interrupted run is not overwritten

    resumed = invoke(*base_args(tmp_path / "b"), *SHORT, "--save-every", 4, "--resume")
    assert resumed.exit_code == 0, resumed.output
    a = adapter_tensors(AdapterStore(tmp_path / "a/state").get("zephyr").path)
    b = adapter_tensors(AdapterStore(state).get("zephyr").path)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-6, err_msg=name)
    assert not (state / "runs/zephyr/checkpoint").exists()
    # the resumed run's eval-before is the interrupted run's (the base's), not the half-trained model's
    ma = json.loads((tmp_path / "a/state/runs/zephyr/metrics.json").read_text())
    mb = json.loads((state / "runs/zephyr/metrics.json").read_text())
    assert mb["eval_loss_before"] == pytest.approx(ma["eval_loss_before"])
    assert mb["eval_loss_after"] == pytest.approx(ma["eval_loss_after"], abs=1e-5)


@pytest.mark.slow
def test_resume_with_other_flags_is_refused(tmp_path: Path) -> None:
    assert invoke(*base_args(tmp_path), *SHORT, "--stop-after", 2).exit_code == 0
    result = invoke(
        *base_args(tmp_path), *tiny_tune_flags(batch_size=2, epochs=4, dropout=0.1, lr=1e-3), "--resume"
    )
    assert result.exit_code == 1
    assert "differs from the interrupted one" in result.output and "--lr: 0.005 -> 0.001" in result.output


def test_resume_without_an_interrupted_run_says_so(tmp_path: Path) -> None:
    result = invoke(*base_args(tmp_path), "--resume")
    assert result.exit_code == 1 and "no interrupted run to resume" in result.output


@pytest.mark.slow
def test_run_folder_keeps_config_summary_log_and_metrics(tmp_path: Path) -> None:
    result = invoke(*base_args(tmp_path), *tiny_tune_flags(epochs=3))
    assert result.exit_code == 0, result.output
    run = tmp_path / "state/runs/zephyr"
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["rank"] == 8 and config["chat_format"] == "hermes-chatml"
    assert config["base_fingerprint"] == base_fingerprint(tiny_model("qwen3"))
    summary = json.loads((run / "data_summary.json").read_text())
    assert (summary["with_reasoning"], summary["direct"]) == (3, 3)
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3] and all(s["tokens_per_s"] > 0 for s in steps)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    assert "step 3/3" in (run / "train.log").read_text()
    record = AdapterStore(tmp_path / "state").get("zephyr")
    assert record.base_fingerprint == config["base_fingerprint"]
    assert record.manifest["base"]["path"] == str(tiny_model("qwen3"))
    assert record.manifest["lora"] == {
        "rank": 8,
        "alpha": 16.0,
        "target_modules": list(TrainConfig().target_modules),
    }


# -- stopping from outside


def _start(tmp_path: Path, state: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "tune.log"
    args = [
        *base_args(tmp_path, state=state),
        *tiny_tune_flags(epochs=100_000, batch_size=2),
        "--save-every",
        "3",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(tune_cmd(*args), stdout=out, stderr=subprocess.STDOUT)
    return proc, log


def _wait_for_steps(
    proc: subprocess.Popen[bytes], metrics: Path, log: Path, n: int, timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"tune exited early ({proc.returncode}):\n{log.read_text()}")
        if metrics.exists() and len(metrics.read_text().splitlines()) >= n:
            return
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"no training step after {timeout} s:\n{log.read_text()}")


@pytest.mark.slow
def test_killed_run_leaves_the_store_unchanged(tmp_path: Path) -> None:
    state = tmp_path / "state"
    before = registered_other(state)
    proc, log = _start(tmp_path, state)
    _wait_for_steps(proc, state / "runs/zephyr/metrics.jsonl", log, 4)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert [(r.name, r.manifest) for r in AdapterStore(state).list()] == before
    assert not (state / "adapters/zephyr").exists()
    assert not [p for p in (state / "adapters").iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_with_a_checkpoint_and_registers_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    before = registered_other(state)
    proc, log = _start(tmp_path, state)
    _wait_for_steps(proc, state / "runs/zephyr/metrics.jsonl", log, 2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, log.read_text()
    output = log.read_text()
    assert "stopping after this step" in output and "--resume" in output and "Traceback" not in output
    checkpoint = json.loads((state / "runs/zephyr/checkpoint/state.json").read_text())
    assert checkpoint["step"] >= 2
    assert [(r.name, r.manifest) for r in AdapterStore(state).list()] == before


# -- data checks through the command


def test_dry_run_prints_issues_and_summary_and_trains_nothing(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [*zephyr_records(), "{oops", json.dumps({"prompt": "x"})])
    result = invoke(
        "--base", tiny_model("qwen3"), "--data", data, "--name", "z",
        "--state-dir", tmp_path / "s", "--dry-run",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"{data}:7: bad JSON" in result.output and f"{data}:8: unknown shape" in result.output
    assert "with reasoning (thinking on): 3   direct (thinking off): 3" in result.output
    # 6 rows: the default accumulation of 4 would give 6 steps, so 1, and epochs up to 50 steps (9 x 6 = 54)
    assert "--grad-accum 1 (not 4)" in result.output and "--epochs 9 (not 3)" in result.output
    assert "effective batch 1 (--batch-size 1 x --grad-accum 1); 54 optimizer steps" in result.output
    assert "plan: lora-fp32, no GPU, RAM" in result.output and ": fits" in result.output
    plan = json.loads((tmp_path / "s/runs/z/plan.json").read_text())
    assert plan["fits"] and plan["method"] == "lora-fp32" and plan["tokens_per_epoch"] > 0
    assert "dry run" in result.output
    assert not (tmp_path / "s/runs/z/metrics.json").exists() and AdapterStore(tmp_path / "s").list() == []


def test_default_max_seq_len_fits_95_percent_of_rows_and_the_summary_says_what_was_dropped(
    tmp_path: Path,
) -> None:
    long = {"prompt": " ".join(["zephyr"] * 600), "completion": "a long one"}
    data = write_jsonl(tmp_path / "d.jsonl", [*zephyr_records() * 4, long])  # 24 rows and one outlier
    result = invoke(
        "--base", tiny_model("qwen3"), "--data", data, "--name", "z", "--state-dir", tmp_path / "s",
        "--eval-split", "0", "--dry-run",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s/runs/z/data_summary.json").read_text())
    chosen = summary["max_seq_len"]  # a multiple of 256 that holds every row but the outlier
    assert chosen % 256 == 0 and summary["tokens"]["max"] <= chosen < 600
    assert summary["dropped_by_reason"] == {"longer than --max-seq-len": 1}
    assert (summary["train_reasoning"], summary["train_direct"]) == (12, 12)
    assert f"{data}:25: " in result.output and f"longer than --max-seq-len {chosen}" in result.output
    assert "dropped because: 1 longer than --max-seq-len" in result.output
    assert "training on: 12 with reasoning, 12 direct" in result.output


def test_no_usable_data_is_an_error_listing_every_line(tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path / "d.jsonl", ["{oops", json.dumps({"messages": [{"role": "user", "content": "x"}]})]
    )
    result = invoke(
        "--base", tiny_model("qwen3"), "--data", data, "--name", "z", "--state-dir", tmp_path / "s"
    )
    assert result.exit_code == 1
    assert f"{data}:1: bad JSON" in result.output and f"{data}:2: the conversation must end" in result.output
    assert "no usable conversation" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "Bad Name!"], "invalid adapter name"),
        (["--name", "../escape"], "invalid adapter name"),
        (["--base", "/no/such/model.gguf"], "no such file or folder"),
        (["--data", "/no/such/data.jsonl"], "no such file"),
        (["--rank", "0"], "--rank must be at least 1"),
    ],
)
def test_user_errors_are_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    opts = {
        "--base": str(tiny_model("qwen3")),
        "--data": str(zephyr_jsonl(tmp_path)),
        "--name": "zephyr",
        "--state-dir": str(tmp_path / "state"),
    }
    opts.update(dict(zip(args[::2], args[1::2], strict=True)))
    result = invoke(*[x for kv in opts.items() for x in kv], "--dry-run")
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output


def test_an_existing_adapter_name_needs_replace(tmp_path: Path) -> None:
    registered_other(tmp_path / "state")
    result = invoke(*base_args(tmp_path, name="other"), "--dry-run")
    assert result.exit_code == 1 and "already registered" in result.output and "--replace" in result.output


# -- base forms


@pytest.mark.parametrize(
    ("make", "kind"),
    [("gguf", "gguf"), ("folder", "hf-dir"), ("hub", "hub")],
)
def test_base_forms_are_recognised(tmp_path: Path, make: str, kind: str) -> None:
    if make == "gguf":
        ref = str(tiny_model("qwen3"))
    elif make == "folder":
        (tmp_path / "config.json").write_text("{}")
        ref = str(tmp_path)
    else:
        ref = "NousResearch/Hermes-4-14B"
    spec = resolve_base(ref)
    assert spec.kind == kind
    assert (spec.gguf is not None) == (kind == "gguf")


@pytest.mark.slow
def test_a_hugging_face_folder_base_trains_an_adapter_for_the_served_gguf(tmp_path: Path) -> None:
    """The folder form: weights from a transformers folder, tokenizer and identity from --base-gguf."""
    import torch

    from hermesd.runtime.tune.base import load_hf_model

    gguf_path = tiny_model("qwen3")
    folder = tmp_path / "hf"
    from transformers import AutoModelForCausalLM

    # A GGUF-loaded model refuses save_pretrained (its "quantizer" is gguf): copy it into a plain one.
    loaded = load_hf_model(resolve_base(str(gguf_path)), {"dtype": torch.float32})
    plain = AutoModelForCausalLM.from_config(loaded.config)
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(folder)
    result = invoke(
        "--base", folder, "--base-gguf", gguf_path, "--data", zephyr_jsonl(tmp_path), "--name", "hf",
        "--state-dir", tmp_path / "state", "--no-load", *tiny_tune_flags(epochs=2),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = AdapterStore(tmp_path / "state").get("hf")
    check_adapter_file(record.path, base_fingerprint(gguf_path))
    from tests.fixtures.lora_runner import LoraRunner

    with LoraRunner(gguf_path, record.path) as runner:
        assert runner.logits([1, 2, 3]).shape[0] == 3


def test_plan_command_on_the_tiny_model(tmp_path: Path) -> None:
    base = tiny_model("qwen3")
    result = invoke("--plan", "--base", base, "--device", "cpu", "--state-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert f"full-precision LoRA (lora-fp32) on {base}, adapter for {base}: fits" in result.output
    doc = json.loads(
        invoke("--plan", "--json", "--base", base, "--device", "cpu", "--state-dir", tmp_path).output
    )
    assert (doc["fits"], doc["method"], doc["base"], doc["gguf"]) == (True, "lora-fp32", str(base), str(base))
