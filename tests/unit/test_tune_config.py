"""Training without training: the schedule and config checks, the base references that are refused,
the device choice (CUDA simulated), the --plan estimate, and hot-loading through the adapters
command (a daemon simulated). Whole runs on the tiny model are in tests/engine/test_tune_train.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hermesd.models.store import AdapterStore
from hermesd.runtime.tune.base import TuneError, resolve_base
from hermesd.runtime.tune.config import TrainConfig, lr_factor
from hermesd.runtime.tune.device import Accelerators, choose_device, load_kwargs, prepare_for_training
from hermesd.runtime.tune.plan import GIB, Device, ModelShape, plan_training
from tests.fixtures.tune_data import registered_other

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


# -- base forms


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
    registered_other(state)
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
