"""`hermesd tune` on a hub base, against a local fake hub: the pairing check reads config.json and
tokenizer.json only (never the weights) and refuses a different network before anything trains; a
missing, gated or private repository and an offline machine without the files are one line each; a
run that fetched once works offline from the cache. Plus the one-line errors of a run that runs out
of memory or disk (their translation; no machine here can run out of GPU memory on demand)."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hermesd.cli.tune import tune_command
from hermesd.runtime.tune.base import TuneError
from hermesd.runtime.tune.config import TrainConfig
from hermesd.runtime.tune.run import _out_of_memory, _saving_errors
from tests.fixtures.fake_hub import FakeHub, point_hf_at, running_hub
from tests.fixtures.tiny_models import tiny_model
from tests.fixtures.tune_data import tiny_hub_repo, zephyr_jsonl

REPO = "NousResearch/Hermes-4-14B"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    with running_hub() as hub:
        point_hf_at(hub, monkeypatch, tmp_path / "hf")
        yield hub


def tune(tmp: Path, *extra: str, base: str = REPO) -> Result:
    tmp.mkdir(parents=True, exist_ok=True)
    args = [
        "--base", base, "--base-gguf", str(tiny_model("qwen3")), "--data", str(zephyr_jsonl(tmp)),
        "--name", "hub", "--state-dir", str(tmp / "state"), "--no-load", "--dry-run", *extra,
    ]  # fmt: skip
    return CliRunner().invoke(tune_command, args, catch_exceptions=False)


def fetched(hub: FakeHub) -> set[str]:
    return {path.rsplit("/", 1)[-1] for _, path, _ in hub.requests if "/resolve/" in path}


def one_line_error(result: Result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]
    for needle in needles:
        assert needle in line, result.output


def test_a_matching_hub_repo_pairs_reading_only_its_config_and_tokenizer(
    hub: FakeHub, tmp_path: Path
) -> None:
    hub.add(REPO, tiny_hub_repo("qwen3"))
    result = tune(tmp_path)
    assert result.exit_code == 0, result.output
    assert "dry run: nothing trained" in result.output
    assert fetched(hub) == {"config.json", "tokenizer.json"}


def test_another_network_on_the_hub_is_refused_before_its_weights_are_fetched(
    hub: FakeHub, tmp_path: Path
) -> None:
    hub.add(REPO, tiny_hub_repo("qwen3", {"num_hidden_layers": 3}))
    result = tune(tmp_path)
    one_line_error(result, "are not the same network: layer count differs (GGUF 2, Hugging Face 3)")
    assert "model.safetensors" not in fetched(hub)


@pytest.mark.parametrize(
    ("setup", "needles"),
    [
        ("missing", ("--base NousResearch/Hermes-4-14B", "repository not found")),
        ("gated", ("--base NousResearch/Hermes-4-14B", "gated repository", "HF_TOKEN")),
        ("private", ("--base NousResearch/Hermes-4-14B", "repository not found (or private: set HF_TOKEN)")),
        ("no-config", ("--base NousResearch/Hermes-4-14B", "has no config.json")),
    ],
)
def test_a_repo_that_cannot_be_read_is_one_line(
    hub: FakeHub, tmp_path: Path, setup: str, needles: Any
) -> None:
    if setup != "missing":
        files = tiny_hub_repo("qwen3")
        if setup == "no-config":
            del files["config.json"]
        hub.add(REPO, files)
    if setup == "gated":
        hub.gated.add(REPO)
    if setup == "private":
        hub.private[REPO] = "secret"
    one_line_error(tune(tmp_path), *needles)


def test_offline_without_the_files_is_one_line_and_after_one_fetch_works_offline(
    hub: FakeHub, tmp_path: Path
) -> None:
    hub.add(REPO, tiny_hub_repo("qwen3"))
    one_line_error(tune(tmp_path / "a", "--offline"), "offline", "not in the Hugging Face cache")
    assert tune(tmp_path / "b").exit_code == 0
    before = len(hub.requests)
    result = tune(tmp_path / "c", "--offline")
    assert result.exit_code == 0, result.output
    assert len(hub.requests) == before  # the hub was not asked


def test_out_of_memory_in_a_step_is_one_line_with_what_to_change() -> None:
    import torch

    with pytest.raises(TuneError) as err, _out_of_memory("cuda", TrainConfig(max_seq_len=8192)):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    assert "out of GPU memory in a training step (--max-seq-len 8192" in str(err.value)
    assert "shorter --max-seq-len" in str(err.value) and "Nothing was registered" in str(err.value)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_a_full_disk_while_saving_is_one_line_that_says_resume(tmp_path: Path, code: int) -> None:
    with pytest.raises(TuneError) as err, _saving_errors(tmp_path):
        raise OSError(code, "No space left on device", str(tmp_path / "checkpoint" / "optimizer.pt"))
    assert "cannot write" in str(err.value) and "optimizer.pt" in str(err.value)
    assert "--resume" in str(err.value) and "Nothing was registered" in str(err.value)


def test_other_os_errors_are_not_called_a_full_disk(tmp_path: Path) -> None:
    with pytest.raises(PermissionError), _saving_errors(tmp_path):
        raise PermissionError(errno.EACCES, "Permission denied")


def test_a_hub_base_without_base_gguf_is_written_for_the_served_gguf(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --base-gguf the served GGUF (hermesd's settings) is the one the adapter is for, so the
    pairing check runs against it (and refuses a different network) before any training."""
    monkeypatch.setenv("HERMESD_MODEL", str(tiny_model("qwen3")))
    hub.add(REPO, tiny_hub_repo("qwen3", {"num_hidden_layers": 3}))
    args = [
        "--base", REPO, "--data", str(zephyr_jsonl(tmp_path)), "--name", "hub",
        "--state-dir", str(tmp_path / "state"), "--no-load", "--dry-run",
    ]  # fmt: skip
    result = CliRunner().invoke(tune_command, args, catch_exceptions=False)
    one_line_error(result, f"{tiny_model('qwen3').name} and {REPO} are not the same network")


def test_files_kept_in_git_are_verified_by_their_blob_id(
    hub: FakeHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """config.json and tokenizer.json live in git on the hub (no sha256): they are checked by their
    git blob id, online and from the cache; a damaged one is refused and evicted, not used."""
    hub.add(REPO, tiny_hub_repo("qwen3"))
    with caplog.at_level("WARNING"):
        assert tune(tmp_path / "a").exit_code == 0
    assert not [r for r in caplog.records if "not verified" in r.getMessage()]
    # damaged in the cache: refused offline, and gone from the cache
    cached = next((tmp_path / "hf").rglob("snapshots/*/config.json"))
    blob = cached.resolve()
    blob.write_bytes(blob.read_bytes().replace(b'"num_hidden_layers": 2', b'"num_hidden_layers": 9'))
    one_line_error(tune(tmp_path / "b", "--offline"), "config.json: git blob id", "does not match the hub's")
    assert not blob.exists()
    # damaged in transfer
    hub.corrupt.add("config.json")
    one_line_error(tune(tmp_path / "c"), "config.json: git blob id", "does not match the hub's")


@pytest.mark.slow
def test_a_4bit_run_on_a_hub_base_stops_and_resumes_from_the_cache(hub: FakeHub, tmp_path: Path) -> None:
    """QLoRA (bitsandbytes' CPU backend) on the hub repo: a run stopped at step 3 resumes offline
    from the Hugging Face cache to the same adapter an uninterrupted run writes."""
    from hermesd.models.store import AdapterStore
    from tests.fixtures.tune_data import tiny_tune_flags

    hub.add(REPO, tiny_hub_repo("qwen3"))

    def run(folder: Path, *extra: str) -> Result:
        folder.mkdir(parents=True, exist_ok=True)
        args = [
            "--base", REPO, "--base-gguf", str(tiny_model("qwen3")), "--data", str(zephyr_jsonl(folder)),
            "--name", "q", "--state-dir", str(folder / "state"), "--no-load", "--method", "qlora-nf4",
            *tiny_tune_flags(epochs=6), "--save-every", "3", *extra,
        ]  # fmt: skip
        return CliRunner().invoke(tune_command, args, catch_exceptions=False)

    whole = run(tmp_path / "a")
    assert whole.exit_code == 0, whole.output
    first = run(tmp_path / "b", "--stop-after", "3")
    assert first.exit_code == 0 and "stopped at step 3/6" in first.output, first.output
    resumed = run(tmp_path / "b", "--resume", "--offline")
    assert resumed.exit_code == 0, resumed.output
    a = AdapterStore(tmp_path / "a" / "state").get("q").path.read_bytes()
    b = AdapterStore(tmp_path / "b" / "state").get("q").path.read_bytes()
    assert a == b
