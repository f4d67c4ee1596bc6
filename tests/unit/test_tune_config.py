"""Training without training: the schedule and config checks, the base references that are refused,
the device choice (CUDA simulated), and hot-loading through the adapters
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
from hermesd.runtime.tune.device import (
    Accelerators,
    choose_device,
    choose_method,
    gpu_device_map,
    load_kwargs,
    prepare_for_training,
)
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


GPU = Accelerators(cuda=True, bitsandbytes=True, bf16=True, gpu_name="H100")
GPU_NO_BF16 = Accelerators(cuda=True, bitsandbytes=True, bf16=False)
GPU_NO_BNB = Accelerators(cuda=True, bitsandbytes=False, bf16=True)
CPU = Accelerators(cuda=False, bitsandbytes=False, bf16=False)
CPU_BNB = Accelerators(cuda=False, bitsandbytes=True, bf16=False)


@pytest.mark.parametrize(
    ("want", "method", "hf_base", "acc", "expected"),
    [
        # (device, method, dtype, gradient checkpointing)
        ("auto", "auto", True, CPU, ("cpu", "lora-fp32", "float32", False)),
        ("auto", "auto", False, CPU, ("cpu", "lora-fp32", "float32", False)),
        ("auto", "auto", True, GPU, ("cuda", "qlora-nf4", "bfloat16", True)),
        ("auto", "auto", True, GPU_NO_BF16, ("cuda", "qlora-nf4", "float16", True)),
        # issue 15: a GGUF base on a GPU was asked to load in 4 bits, which transformers refuses
        ("auto", "auto", False, GPU, ("cuda", "lora-bf16", "bfloat16", True)),
        ("auto", "auto", False, GPU_NO_BNB, ("cuda", "lora-bf16", "bfloat16", True)),
        ("cpu", "auto", True, GPU, ("cpu", "lora-fp32", "float32", False)),
        ("auto", "lora-fp32", True, GPU, ("cpu", "lora-fp32", "float32", False)),
        # asked for: 4 bits on bitsandbytes' CPU backend (the tests' QLoRA path)
        ("auto", "qlora-nf4", True, CPU_BNB, ("cpu", "qlora-nf4", "bfloat16", True)),
        ("cpu", "qlora-nf4", True, GPU, ("cpu", "qlora-nf4", "bfloat16", True)),
    ],
)
def test_device_choice(
    want: Any, method: Any, hf_base: bool, acc: Accelerators, expected: tuple[Any, ...]
) -> None:
    plan = choose_device(want, acc, method=method, hf_base=hf_base)
    assert (plan.device, plan.method, plan.compute_dtype, plan.gradient_checkpointing) == expected
    assert (
        choose_method(want, method, cuda=acc.cuda, bitsandbytes=acc.bitsandbytes, hf_base=hf_base)
        == (expected[1])
    )


@pytest.mark.parametrize(
    ("want", "method", "hf_base", "acc", "message"),
    [
        ("cuda", "auto", True, CPU_BNB, "no CUDA device"),
        ("auto", "auto", True, GPU_NO_BNB, "needs bitsandbytes: pip install 'hermesd\\[tune-cuda\\]'"),
        ("auto", "qlora-nf4", False, GPU, "cannot load a GGUF that way"),
        ("auto", "qlora-nf4", True, CPU, "needs bitsandbytes"),
        ("auto", "lora-bf16", False, CPU, "lora-bf16 trains on a CUDA GPU"),
    ],
)
def test_device_choice_errors(want: Any, method: Any, hf_base: bool, acc: Accelerators, message: str) -> None:
    with pytest.raises(TuneError, match=message):
        choose_device(want, acc, method=method, hf_base=hf_base)


def test_qlora_loads_the_base_in_4bit_nf4_on_the_gpu() -> None:
    import torch

    plan = choose_device("auto", GPU, hf_base=True)
    kwargs = load_kwargs(plan)
    q = kwargs["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16 and kwargs["dtype"] == torch.bfloat16
    assert kwargs["device_map"] == {"": 0}
    assert load_kwargs(choose_device("cpu", CPU)) == {"dtype": torch.float32}
    bf16 = load_kwargs(choose_device("auto", GPU, hf_base=False))
    assert bf16 == {"dtype": torch.bfloat16, "device_map": {"": 0}}  # no 4-bit config for a GGUF


def test_a_model_split_over_gpus_is_loaded_as_the_plan_split_it() -> None:
    plan = choose_device("auto", GPU, hf_base=True, split=[(0, 3), (1, 2)])
    assert plan.reason.startswith("2 GPUs: 4-bit NF4 QLoRA")
    assert plan.device_map == {
        "model.embed_tokens": 0,
        "model.rotary_emb": 0,
        "model.layers.0": 0,
        "model.layers.1": 0,
        "model.layers.2": 0,
        "model.layers.3": 1,
        "model.layers.4": 1,
        "model.norm": 1,
        "lm_head": 1,
    }
    assert load_kwargs(plan)["device_map"] is plan.device_map
    assert gpu_device_map([(2, 4)])["model.layers.3"] == 2
    # one GPU, the one the plan chose (the most free memory), not always the first
    assert choose_device("auto", GPU, hf_base=True, split=[(1, 5)]).device_map == {"": 1}


def test_the_device_map_names_every_module_of_a_real_model() -> None:
    """accelerate refuses a device_map that misses a module: build a tiny Qwen 3 and a Llama on the
    meta device and check every top-level module and layer is placed."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

    for config in (
        Qwen3Config(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                    num_key_value_heads=1, head_dim=16, vocab_size=64),
        LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                    num_key_value_heads=1, vocab_size=64),
    ):  # fmt: skip
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        names = {n for n, _ in model.named_modules()}
        placed = gpu_device_map([(0, 2), (1, 1)])
        assert set(placed) <= names
        leaves = [n for n, m in model.named_modules() if not list(m.children()) or n.count(".") == 2]
        for name in leaves:
            if name.startswith(("model.", "lm_head")):
                assert any(name == k or name.startswith(k + ".") for k in placed), name


def test_qlora_prepares_the_model_with_gradient_checkpointing(monkeypatch: pytest.MonkeyPatch) -> None:
    import peft

    calls: list[dict[str, Any]] = []

    def fake_prepare(model: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return model

    monkeypatch.setattr(peft, "prepare_model_for_kbit_training", fake_prepare)
    plan = choose_device("auto", GPU, hf_base=True)
    sentinel = object()
    assert prepare_for_training(sentinel, plan) is sentinel
    assert calls == [
        {"use_gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}}
    ]


# (the --plan estimate: tests/unit/test_tune_plan.py)


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


# -- defaults that fit the data


@pytest.mark.parametrize(
    ("config", "rows", "accum_set", "epochs_set", "grad_accum", "epochs", "steps"),
    [
        # issue 15: 30 chats, --epochs 8 --batch-size 4 gave 16 steps with the default accumulation of 4
        (TrainConfig(epochs=8, batch_size=4), 30, False, True, 1, 8, 64),
        (TrainConfig(epochs=8, batch_size=4, grad_accum=4), 30, True, True, 4, 8, 16),  # the user's choice
        (TrainConfig(), 30, False, False, 1, 3, 90),
        (TrainConfig(), 60, False, False, 2, 3, 90),
        (TrainConfig(), 5, False, False, 1, 10, 50),  # then more epochs
        (TrainConfig(), 1, False, False, 1, 20, 20),  # at most 20 of them
        (TrainConfig(), 5, False, True, 1, 3, 15),
        (TrainConfig(), 1000, False, False, 4, 3, 750),  # enough data: the defaults stand
        (TrainConfig(max_steps=10), 30, False, False, 4, 3, 10),  # --max-steps: the user decides
    ],
)
def test_steps_are_fitted_to_the_data(
    config: TrainConfig,
    rows: int,
    accum_set: bool,
    epochs_set: bool,
    grad_accum: int,
    epochs: int,
    steps: int,
) -> None:
    from hermesd.runtime.tune.config import fit_to_data

    fitted, notes = fit_to_data(config, rows, grad_accum_set=accum_set, epochs_set=epochs_set)
    assert (fitted.grad_accum, fitted.epochs, fitted.total_steps(rows)) == (grad_accum, epochs, steps)
    assert bool(notes) == (fitted != config or (steps < 50 and config.max_steps is None))


def test_effective_batch_and_steps_are_described() -> None:
    from hermesd.runtime.tune.config import describe_steps

    assert describe_steps(TrainConfig(epochs=8, batch_size=4, grad_accum=1), 30) == (
        "effective batch 4 (--batch-size 4 x --grad-accum 1); 64 optimizer steps (8 per epoch x 8 epochs) "
        "on 30 training rows"
    )


@pytest.mark.parametrize(
    ("before", "after", "on_train", "config", "steps", "expected"),
    [
        # issue 15: 16 steps left the eval loss at 3.3; 64 steps took it to 0.18
        (4.1, 3.3, True, TrainConfig(grad_accum=4, lr=2e-3, rank=8), 16, "--grad-accum 1"),
        (4.1, 0.18, True, TrainConfig(grad_accum=1), 64, None),
        (2.0, 1.95, False, TrainConfig(grad_accum=1), 200, "more --epochs (now 3)"),
        (2.0, 1.5, False, TrainConfig(grad_accum=1), 200, None),  # held out: a real drop is enough
        (2.0, 1.5, True, TrainConfig(grad_accum=1), 20, "more --epochs (now 3) or more data"),
        (8.0, 3.3, True, TrainConfig(grad_accum=1), 64, "more --epochs (now 3)"),  # halved, still high
        (5.6, 1.2, True, TrainConfig(grad_accum=1), 100, None),
    ],
)
def test_the_summary_warns_when_the_adapter_has_not_learned(
    before: float, after: float, on_train: bool, config: TrainConfig, steps: int, expected: str | None
) -> None:
    from hermesd.runtime.tune.config import learning_warning

    warning = learning_warning(before, after, eval_on_train=on_train, steps=steps, config=config)
    if expected is None:
        assert warning is None
    else:
        assert warning is not None and "has not learned" in warning and expected in warning, warning
        assert f"{before:.3f} -> {after:.3f}" in warning


@pytest.mark.parametrize(
    ("lengths", "cap", "expected"),
    [
        ([100] * 19 + [9000], None, 256),  # 95 % fit in 256; one outlier does not set the length
        ([3000] * 10 + [5000] * 10, None, 5120),
        ([3000] * 10 + [5000] * 10, 4096, 4096),  # capped by what the plan fits
        ([], None, 2048),
        ([10, 20], None, 256),
    ],
)
def test_default_max_seq_len_comes_from_the_data(lengths: list[int], cap: int | None, expected: int) -> None:
    from hermesd.runtime.tune.data import choose_max_seq_len

    assert choose_max_seq_len(lengths, cap=cap) == expected


def test_token_estimate_counts_every_part_of_a_conversation() -> None:
    from hermesd.runtime.tune.data import estimate_tokens, parse_line

    conv = parse_line(
        '{"messages": [{"role": "user", "content": "' + "a" * 40 + '"}, '
        '{"role": "assistant", "content": "' + "b" * 40 + '", "reasoning_content": "' + "c" * 80 + '"}]}',
        1,
    )
    assert estimate_tokens(conv) == 160 // 4 + 2 * 6
