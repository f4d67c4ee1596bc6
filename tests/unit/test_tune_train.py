"""Training runs: schedule, checkpoints and --resume, Ctrl-C and kill -9, the run folder, the
device choice (CUDA simulated), the --plan estimate, --dry-run, and the CLI's error messages."""

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
from hermesd.runtime.tune.base import TuneError, resolve_base
from hermesd.runtime.tune.config import TrainConfig, lr_factor
from hermesd.runtime.tune.device import Accelerators, choose_device, load_kwargs, prepare_for_training
from hermesd.runtime.tune.plan import GIB, Device, ModelShape, plan_training
from tests.fixtures.tiny_models import tiny_model
from tests.fixtures.tune_data import tiny_tune_flags, tune_cmd, write_jsonl, zephyr_jsonl, zephyr_records

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


# -- schedule and config


@pytest.mark.parametrize(
    ("step", "total", "warmup", "schedule", "expected"),
    [
        (0, 100, 10, "cosine", 0.1),
        (9, 100, 10, "cosine", 1.0),
        (10, 100, 10, "cosine", 1.0),
        (55, 100, 10, "cosine", 0.5),
        (99, 100, 0, "linear", 0.01),
        (50, 100, 0, "linear", 0.5),
        (70, 100, 5, "constant", 1.0),
    ],
)
def test_learning_rate_schedule(step: int, total: int, warmup: int, schedule: Any, expected: float) -> None:
    assert lr_factor(step, total, warmup, schedule) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rank", 0, "--rank"),
        ("lr", 0.0, "--lr"),
        ("dropout", 1.0, "--dropout"),
        ("epochs", 0, "--epochs"),
        ("max_seq_len", 4, "--max-seq-len"),
        ("target_modules", ("q_proj", "lm_head"), "lm_head not supported"),
    ],
)
def test_bad_hyper_parameters_name_their_flag(field: str, value: Any, message: str) -> None:
    with pytest.raises(TuneError, match=message):
        TrainConfig(**{field: value})


def test_steps_follow_epochs_batch_and_accumulation() -> None:
    config = TrainConfig(epochs=3, batch_size=2, grad_accum=2)
    assert config.steps_per_epoch(10) == 3 and config.total_steps(10) == 9
    assert TrainConfig(epochs=3, batch_size=2, max_steps=5).total_steps(10) == 5


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


def _registered_other(state: Path) -> list[Any]:
    store = AdapterStore(state)
    other = state.parent / "other.gguf"
    other.write_bytes(b"an adapter registered before")
    store.register("other", other, {"base": {"fingerprint": "x"}})
    return [(r.name, r.manifest) for r in store.list()]


@pytest.mark.slow
def test_killed_run_leaves_the_store_unchanged(tmp_path: Path) -> None:
    state = tmp_path / "state"
    before = _registered_other(state)
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
    before = _registered_other(state)
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
    assert "dry run" in result.output
    assert not (tmp_path / "s/runs/z/metrics.json").exists() and AdapterStore(tmp_path / "s").list() == []


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
    _registered_other(tmp_path / "state")
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


@pytest.mark.parametrize(
    ("ref", "message"),
    [("/definitely/not/here", "no such file or folder"), ("just-a-name", "owner/name")],
)
def test_bad_base_is_explained(ref: str, message: str) -> None:
    with pytest.raises(TuneError, match=message):
        resolve_base(ref)


def test_folder_without_config_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(TuneError, match=r"without config\.json"):
        resolve_base(str(tmp_path))


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


# -- device choice (a CUDA machine simulated)


@pytest.mark.parametrize(
    ("want", "acc", "device", "method", "dtype"),
    [
        ("auto", Accelerators(cuda=False, bitsandbytes=False, bf16=False), "cpu", "lora", "float32"),
        (
            "auto",
            Accelerators(cuda=True, bitsandbytes=True, bf16=True, gpu_name="H100"),
            "cuda",
            "qlora",
            "bfloat16",
        ),
        ("auto", Accelerators(cuda=True, bitsandbytes=True, bf16=False), "cuda", "qlora", "float16"),
        ("cpu", Accelerators(cuda=True, bitsandbytes=True, bf16=True), "cpu", "lora", "float32"),
    ],
)
def test_device_choice(want: Any, acc: Accelerators, device: str, method: str, dtype: str) -> None:
    plan = choose_device(want, acc)
    assert (plan.device, plan.method, plan.compute_dtype) == (device, method, dtype)
    assert plan.gradient_checkpointing == (method == "qlora")


@pytest.mark.parametrize(
    ("want", "acc", "message"),
    [
        ("cuda", Accelerators(cuda=False, bitsandbytes=True, bf16=False), "no CUDA device"),
        ("auto", Accelerators(cuda=True, bitsandbytes=False, bf16=True), "pip install bitsandbytes"),
    ],
)
def test_device_choice_errors(want: Any, acc: Accelerators, message: str) -> None:
    with pytest.raises(TuneError, match=message):
        choose_device(want, acc)


def test_qlora_loads_the_base_in_4bit_nf4_on_the_gpu() -> None:
    import torch

    plan = choose_device("auto", Accelerators(cuda=True, bitsandbytes=True, bf16=True))
    kwargs = load_kwargs(plan)
    q = kwargs["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16 and kwargs["dtype"] == torch.bfloat16
    assert kwargs["device_map"] == {"": 0}
    assert load_kwargs(choose_device("cpu", Accelerators(False, False, False))) == {"dtype": torch.float32}


def test_qlora_prepares_the_model_with_gradient_checkpointing(monkeypatch: pytest.MonkeyPatch) -> None:
    import peft

    calls: list[dict[str, Any]] = []

    def fake_prepare(model: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return model

    monkeypatch.setattr(peft, "prepare_model_for_kbit_training", fake_prepare)
    plan = choose_device("auto", Accelerators(cuda=True, bitsandbytes=True, bf16=True))
    sentinel = object()
    assert prepare_for_training(sentinel, plan) is sentinel
    assert calls == [{"use_gradient_checkpointing": True}]


# -- --plan


def _shape(n_b: float, layers: int, hidden: int, inter: int, vocab: int, heads: int, kv: int) -> ModelShape:
    return ModelShape(int(n_b * 1e9), layers, hidden, inter, vocab, heads * 128, kv * 128)


HERMES_14B = _shape(14.77, 40, 5120, 17408, 151936, 40, 8)
HERMES_70B = _shape(70.55, 80, 8192, 28672, 128256, 64, 8)
HERMES_405B = _shape(405.85, 126, 16384, 53248, 128256, 128, 8)
TARGETS = TrainConfig().target_modules


@pytest.mark.parametrize(
    ("shape", "devices", "fits", "low", "high", "reason"),
    [
        # the project's starting figures: 14B QLoRA in 12-16 GB, 70B in 40-48 GB
        (HERMES_14B, [Device("cuda", "24 GB GPU", 24 * GIB)], True, 12, 16, ""),
        (HERMES_14B, [Device("cuda", "8 GB GPU", 8 * GIB)], False, 12, 16, "several GPUs"),
        (HERMES_70B, [Device("cuda", "80 GB GPU", 80 * GIB)], True, 40, 48, ""),
        (HERMES_70B, [Device("cuda", "24 GB GPU", 24 * GIB)], False, 40, 48, "several GPUs"),
        (
            HERMES_405B,
            [Device("cuda", f"GPU {i}", 80 * GIB) for i in range(8)],
            False,
            200,
            400,
            "several GPUs",
        ),
        (HERMES_14B, [Device("cpu", "CPU", 256 * GIB)], True, 60, 250, "days"),
    ],
)
def test_training_plan(
    shape: ModelShape, devices: list[Device], fits: bool, low: float, high: float, reason: str
) -> None:
    plan = plan_training(shape, devices, rank=16, targets=TARGETS, batch=1, seq_len=2048)
    assert plan.fits == fits
    assert low * GIB <= plan.need_bytes <= high * GIB, plan.lines()
    assert reason in " ".join(plan.reasons)
    assert "12-16 GB" in "\n".join(plan.lines())


def test_plan_suggests_accumulation_when_the_batch_is_too_big() -> None:
    plan = plan_training(
        HERMES_14B, [Device("cuda", "16 GB", 16 * GIB)], rank=16, targets=TARGETS, batch=8, seq_len=2048
    )
    assert not plan.fits and "--batch-size 1 --grad-accum 8" in " ".join(plan.reasons)


def test_plan_command_on_the_tiny_model(tmp_path: Path) -> None:
    result = invoke("--plan", "--base", tiny_model("qwen3"), "--device", "cpu", "--state-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert "full-precision LoRA on CPU" in result.output and "fits" in result.output


# -- hot-loading and the adapters command (a daemon simulated with httpx.MockTransport)


class FakeDaemon:
    """The server's adapter contract: GET/POST /v1/adapters, DELETE /v1/adapters/<name>."""

    def __init__(self, registered: set[str], key: str | None = None, base_ok: bool = True) -> None:
        self.registered, self.loaded, self.key, self.base_ok = registered, set[str](), key, base_ok
        self.calls: list[str] = []

    def handler(self, request: Any) -> Any:
        import httpx

        self.calls.append(f"{request.method} {request.url.path}")
        if self.key and request.headers.get("authorization") != f"Bearer {self.key}":
            return httpx.Response(
                401, json={"error": {"message": "bad key", "type": "auth", "param": None, "code": None}}
            )
        if request.method == "GET":
            data = [
                {
                    "name": n,
                    "id": f"tiny:{n}",
                    "loaded": n in self.loaded,
                    "path": "p",
                    "base_fingerprint": None,
                }
                for n in sorted(self.registered | self.loaded)
            ]
            return httpx.Response(200, json={"object": "list", "data": data})
        if request.method == "POST":
            name = json.loads(request.content)["name"]
            if name not in self.registered:
                return httpx.Response(404, json={"error": {"message": f"no adapter {name}"}})
            if not self.base_ok:
                return httpx.Response(400, json={"error": {"message": "adapter was trained on another base"}})
            if name in self.loaded:
                return httpx.Response(409, json={"error": {"message": "already loaded"}})
            self.loaded.add(name)
            return httpx.Response(200, json={"name": name, "id": f"tiny:{name}", "loaded": True})
        name = request.url.path.rsplit("/", 1)[-1]
        if name not in self.loaded:
            return httpx.Response(404, json={"error": {"message": "not loaded"}})
        self.loaded.discard(name)
        return httpx.Response(200, json={"name": name, "loaded": False})

    def client(self, key: str | None = None) -> Any:
        import httpx

        from hermesd.runtime.tune.daemon import DaemonClient

        return DaemonClient("http://daemon", key, transport=httpx.MockTransport(self.handler))


@pytest.mark.parametrize(
    ("daemon", "reload", "loaded", "model_id", "text", "calls"),
    [
        (FakeDaemon({"z"}), False, True, "tiny:z", "loaded into", ["POST /v1/adapters"]),
        # a retrained adapter replaces the loaded old one (--replace)
        (FakeDaemon({"z"}), True, True, "tiny:z", "loaded into", ["POST /v1/adapters"] * 1),
        (FakeDaemon({"z"}, base_ok=False), False, False, None, "another base", ["POST /v1/adapters"]),
        (FakeDaemon(set()), False, False, None, "not loaded", ["POST /v1/adapters"]),
    ],
)
def test_hot_load_outcomes(
    daemon: FakeDaemon, reload: bool, loaded: bool, model_id: str | None, text: str, calls: list[str]
) -> None:
    from hermesd.runtime.tune.daemon import hot_load

    result = hot_load(daemon.client(), "z", reload=reload)
    assert (result.loaded, result.model_id) == (loaded, model_id)
    assert text in result.message and daemon.calls == calls


def test_hot_load_replaces_a_loaded_older_version() -> None:
    from hermesd.runtime.tune.daemon import hot_load

    daemon = FakeDaemon({"z"})
    daemon.loaded.add("z")
    result = hot_load(daemon.client(), "z", reload=True)
    assert result.model_id == "tiny:z"
    assert daemon.calls == ["POST /v1/adapters", "DELETE /v1/adapters/z", "POST /v1/adapters"]


def test_hot_load_with_no_daemon_says_how_to_load_later() -> None:
    from hermesd.runtime.tune.daemon import DaemonClient, DaemonUnreachable, hot_load
    from tests.e2e.server_process import free_port

    result = hot_load(DaemonClient(f"http://127.0.0.1:{free_port()}", timeout=5), "z", reload=False)
    assert not result.loaded and "hermesd adapters load z" in result.message
    with pytest.raises(DaemonUnreachable):
        DaemonClient(f"http://127.0.0.1:{free_port()}", timeout=5).list_adapters()


def test_admin_key_is_sent_and_a_wrong_one_is_explained() -> None:
    from hermesd.runtime.tune.daemon import DaemonError

    daemon = FakeDaemon({"z"}, key="secret")
    assert daemon.client("secret").load("z")["loaded"]
    with pytest.raises(DaemonError, match="HERMESD_ADMIN_API_KEY") as err:
        daemon.client("wrong").load("z")
    assert err.value.status == 401


def test_adapters_command_list_load_unload_rm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hermesd.cli import adapters_cmd

    state = tmp_path / "state"
    _registered_other(state)
    daemon = FakeDaemon({"other"})
    monkeypatch.setattr(adapters_cmd, "DaemonClient", lambda url, key: daemon.client(key))
    runner = CliRunner()
    common = ["--state-dir", str(state), "--serve-url", "http://daemon", "--api-key", "k"]

    def run(*args: str) -> Result:
        return runner.invoke(adapters_cmd.adapters_group, [*args, *common], catch_exceptions=False)

    listed = json.loads(run("list", "--json").output)
    assert [(r["name"], r["loaded"]) for r in listed] == [("other", False)]
    assert "clients can now use model 'tiny:other'" in run("load", "other").output
    assert json.loads(run("list", "--json").output)[0]["loaded"] is True
    refused = run("rm", "other")
    assert refused.exit_code == 1 and "unload it first" in refused.output
    assert run("unload", "other").exit_code == 0
    missing = run("unload", "other")
    assert missing.exit_code == 1 and "not loaded" in missing.output
    assert run("rm", "other").exit_code == 0
    assert AdapterStore(state).list() == []
    assert run("rm", "other").exit_code == 1
