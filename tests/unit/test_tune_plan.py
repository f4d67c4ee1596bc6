"""The training plan (runtime/tune/plan.py) by tables: the catalog's four variants on the machines of
README's table (profiles in tests/fixtures/hardware/), what it counts and why, the split over GPUs,
every part of a split GGUF, and `hermesd tune --plan` (human and --json) with --hardware and
--variant. Nothing here loads torch or llama.cpp."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from click.testing import CliRunner

from hermesd.cli.tune import tune_command
from hermesd.models.catalog import load_catalog
from hermesd.runtime.hardware import load_profile
from hermesd.runtime.tune.plan import (
    GIB,
    NF4_BYTES_PER_WEIGHT,
    Gpu,
    Machine,
    PlanRequest,
    TrainingPlan,
    plan_training,
)
from hermesd.runtime.tune.shape import machine_from_hardware, plan_target, shape_from_gguf, shape_from_variant
from tests.fixtures.bad_ggufs import resplit_gguf

PROFILES = Path(__file__).resolve().parents[1] / "fixtures" / "hardware"
CATALOG = load_catalog()
VARIANTS = ("hermes-4-14b", "hermes-4.3-36b", "hermes-4-70b", "hermes-4-405b")


def machine(profile: str) -> Machine:
    return machine_from_hardware(load_profile(PROFILES / f"{profile}.json"), cuda_usable=True)


def plan_for(variant_id: str, profile: str, **request: Any) -> TrainingPlan:
    m = machine(profile)
    target = plan_target(None, None, variant_id, served=None, gpu=bool(m.gpus))
    return plan_training(
        target.shape,
        m,
        PlanRequest(**request),
        base=target.base,
        gguf=target.gguf,
        alternatives=target.alternatives,
    )


def gpu_gib(plan: TrainingPlan) -> float:
    return sum(d.bytes for d in plan.devices) / GIB


# README's table: rank 16 on every projection, --max-seq-len 2048, batch 1, the chunked loss. GPU
# memory in GiB over the GPUs used (RAM for the CPU box). The figures may move by 5 % without a README
# edit. By hand for the 14B (h 5120, q 5120, kv 1024, i 17408, vocab 151,936, 40 layers), in GiB:
# - qlora-nf4: 6.35 (NF4 layers) + 5.80 (fp32 embedding and output layer) + 0.96 (LoRA, AdamW) + 0.78
#   (40 checkpointed layer inputs, bf16) + 0.68 (one layer recomputed: 12h + 5q + 3kv + 5i = 177,152
#   values a token, bf16) + 1.45 (1024 tokens' logits at 10 bytes) + 1.0 (CUDA) = 17.0;
# - lora-fp32: 49.2 (fp32 layers) + 5.80 + 0.96 + 54.1 (every layer's 177,152 values a token, fp32)
#   + 1.74 (1024 tokens' logits at 12 bytes) + 2.0 (the process) = 113.8.
TABLE = [
    ("rtx4090-24gb", "hermes-4-14b", "qlora-nf4", True, 1, 17.0),
    ("rtx4090-24gb", "hermes-4.3-36b", "qlora-nf4", False, 1, 29.4),
    ("rtx4090-24gb", "hermes-4-70b", "qlora-nf4", False, 1, 49.6),
    ("rtx4090-24gb", "hermes-4-405b", "qlora-nf4", False, 1, 230.1),
    ("a6000-48gb", "hermes-4-14b", "qlora-nf4", True, 1, 17.0),
    ("a6000-48gb", "hermes-4.3-36b", "qlora-nf4", True, 1, 29.4),
    ("a6000-48gb", "hermes-4-70b", "qlora-nf4", False, 1, 49.6),
    ("a6000-48gb", "hermes-4-405b", "qlora-nf4", False, 1, 230.1),
    ("2xa100-80gb", "hermes-4-14b", "qlora-nf4", True, 1, 17.0),
    ("2xa100-80gb", "hermes-4.3-36b", "qlora-nf4", True, 1, 29.4),
    ("2xa100-80gb", "hermes-4-70b", "qlora-nf4", True, 1, 49.6),
    ("2xa100-80gb", "hermes-4-405b", "qlora-nf4", False, 2, 233.2),
    ("8xa100-80gb", "hermes-4-14b", "qlora-nf4", True, 1, 17.0),
    ("8xa100-80gb", "hermes-4.3-36b", "qlora-nf4", True, 1, 29.4),
    ("8xa100-80gb", "hermes-4-70b", "qlora-nf4", True, 1, 49.6),
    ("8xa100-80gb", "hermes-4-405b", "qlora-nf4", True, 8, 251.7),
    ("cpu-64gb", "hermes-4-14b", "lora-fp32", False, 0, 113.8),
    ("cpu-64gb", "hermes-4.3-36b", "lora-fp32", False, 0, 264.6),
    ("cpu-64gb", "hermes-4-70b", "lora-fp32", False, 0, 443.8),
    ("cpu-64gb", "hermes-4-405b", "lora-fp32", False, 0, 2051.3),
]


@pytest.mark.parametrize(("profile", "variant", "method", "fits", "n_gpus", "need_gib"), TABLE)
def test_readme_table(
    profile: str, variant: str, method: str, fits: bool, n_gpus: int, need_gib: float
) -> None:
    plan = plan_for(variant, profile)
    assert (plan.method, plan.fits, len(plan.devices)) == (method, fits, n_gpus), plan.lines()
    need = gpu_gib(plan) if plan.devices else plan.ram_bytes / GIB
    assert need == pytest.approx(need_gib, rel=0.05), plan.lines()
    hf_repo = CATALOG.variant(variant).hf_repo  # type: ignore[union-attr]
    assert plan.base == hf_repo if n_gpus else plan.base == plan.gguf and plan.base.endswith(".gguf")
    if not fits:
        assert plan.reason and plan.suggestions, plan.lines()


README = Path(__file__).resolve().parents[2] / "README.md"
README_COLUMNS = ("hermes-4-14b", "hermes-4.3-36b", "hermes-4-70b", "hermes-4-405b")


def readme_cells() -> dict[tuple[str, str], tuple[float, bool]]:
    """(profile, variant) -> (GiB, fits) from the README's training table: `| one 24 GB GPU
    (`rtx4090-24gb`) | 17.0 fits | 29.4 no | ...`."""
    out: dict[tuple[str, str], tuple[float, bool]] = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or "`" not in cells[0] or not cells[1][:1].isdigit():
            continue
        profile = cells[0].split("`")[1]
        for variant, cell in zip(README_COLUMNS, cells[1:], strict=True):
            figure, verdict = cell.split()[:2]
            out[(profile, variant)] = (float(figure), verdict.rstrip(",") == "fits")
    return out


def test_the_readme_table_is_the_plans() -> None:
    """The README's figures are TABLE's (which the plan must give): the two cannot drift apart."""
    cells = readme_cells()
    assert set(cells) == {(profile, variant) for profile, variant, *_ in TABLE}
    for profile, variant, _, fits, _, need_gib in TABLE:
        assert cells[(profile, variant)] == (need_gib, fits), (profile, variant)


def test_24gb_gpu_trains_14b_as_qlora_on_the_hugging_face_repo_with_its_numbers() -> None:
    plan = plan_for("14b", "rtx4090-24gb")
    assert plan.fits and plan.method == "qlora-nf4" and plan.base == "NousResearch/Hermes-4-14B"
    assert plan.gguf is not None and plan.gguf.endswith(".gguf")
    doc = plan.to_json()
    assert doc["devices"][0]["index"] == 0 and 14 * GIB < doc["devices"][0]["bytes"] < 22 * GIB
    assert doc["ram_bytes"] < doc["ram_free_bytes"] and "reason" not in doc
    parts = doc["parts"]
    # 13.2B linear weights in NF4 (~6.4 GiB), the 1.56B-weight embedding and output layer up-cast to
    # fp32 by peft (~5.8 GiB), the logits of one 1024-token chunk x 151,936 (~1.45 GiB; all 2048
    # tokens' at once would be twice that)
    assert parts["base linear layers (NF4)"] == pytest.approx(6.35 * GIB, rel=0.03)
    assert parts["embeddings + output layer (fp32 up-cast)"] == pytest.approx(5.8 * GIB, rel=0.02)
    assert parts["logits (chunked loss)"] == doc["logits_chunked_bytes"] == 1024 * 151936 * 10
    assert doc["logits_bytes"] == 2048 * 151936 * 10


def test_64gb_cpu_box_does_not_fit_14b_and_says_what_would() -> None:
    plan = plan_for("14b", "cpu-64gb")
    assert not plan.fits and plan.method == "lora-fp32" and plan.devices == ()
    parts = dict(plan.parts)
    weights = parts["base weights (fp32)"] + parts["embeddings + output layer"]
    assert weights == pytest.approx(59e9, rel=0.02)  # the dequantized 14B
    assert plan.reason is not None and "of RAM" in plan.reason and "57.6 GiB available" in plan.reason
    assert any(s.startswith("a CUDA GPU with 17.0 GiB") for s in plan.suggestions), plan.suggestions
    assert any("trains for days" in n for n in plan.notes)


@pytest.mark.parametrize(
    ("variant", "profile", "request_", "suggestion"),
    [
        ("70b", "a6000-48gb", {}, "--max-seq-len 768"),
        ("36b", "rtx4090-24gb", {}, "a smaller model: Hermes 4 14B (NousResearch/Hermes-4-14B)"),
        ("405b", "2xa100-80gb", {}, "3 GPUs like GPU 0"),
        ("70b", "a6000-48gb", {"batch": 4, "seq_len": 1024}, "--max-seq-len 768 --batch-size 1"),
    ],
)
def test_what_would_fit(variant: str, profile: str, request_: dict[str, Any], suggestion: str) -> None:
    plan = plan_for(variant, profile, **request_)
    assert not plan.fits and any(s.startswith(suggestion) for s in plan.suggestions), plan.suggestions


def test_a_suggested_setting_does_fit() -> None:
    plan = plan_for("70b", "a6000-48gb")
    seq = int(next(s for s in plan.suggestions if s.startswith("--max-seq-len")).split()[1])
    assert plan_for("70b", "a6000-48gb", seq_len=seq).fits
    assert not plan_for("70b", "a6000-48gb", seq_len=seq + 256).fits


def test_a_model_too_big_for_one_gpu_is_split_by_free_memory() -> None:
    shape = shape_from_variant(CATALOG.variant("70b"))  # type: ignore[arg-type]
    uneven = Machine((Gpu(0, "big", 40 * GIB), Gpu(1, "small", 20 * GIB)), 64 * GIB)
    plan = plan_training(shape, uneven, PlanRequest(), base="b", gguf=None)
    assert plan.fits, plan.lines()
    layers = {d.index: d.layers for d in plan.devices}
    assert sum(layers.values()) == 80 and layers[0] > layers[1] > 0
    assert all(d.bytes <= d.free_bytes for d in plan.devices)
    one = plan_training(
        shape, replace(uneven, gpus=(Gpu(0, "big", 80 * GIB),)), PlanRequest(), base="b", gguf=None
    )
    assert [d.layers for d in one.devices] == [80]


@pytest.mark.parametrize(
    ("cuda_usable", "hf_base", "method"),
    [(True, True, "qlora-nf4"), (True, False, "lora-bf16"), (False, True, "lora-fp32")],
)
def test_method_follows_the_machine_and_the_base(cuda_usable: bool, hf_base: bool, method: str) -> None:
    shape = shape_from_variant(CATALOG.variant("14b"))  # type: ignore[arg-type]
    m = replace(machine("a6000-48gb"), cuda_usable=cuda_usable, ram_bytes=512 * GIB)
    plan = plan_training(shape, m, PlanRequest(hf_base=hf_base), base="b", gguf=None)
    assert plan.method == method
    weights = dict(plan.parts)
    per_weight = {"qlora-nf4": NF4_BYTES_PER_WEIGHT, "lora-bf16": 2, "lora-fp32": 4}[method]
    body = shape.layer_params * shape.layers
    label = next(k for k in weights if k.startswith("base"))
    assert weights[label] == pytest.approx(body * per_weight, rel=0.01)


def test_checkpointing_activations_and_the_chunked_loss_scale_with_tokens() -> None:
    shape = shape_from_variant(CATALOG.variant("14b"))  # type: ignore[arg-type]
    m = machine("8xa100-80gb")

    def part(label: str, **kw: Any) -> int:
        return dict(plan_training(shape, m, PlanRequest(**kw), base="b", gguf=None).parts)[label]

    assert part("activations (checkpointed)", seq_len=4096) == 2 * part(
        "activations (checkpointed)", seq_len=2048
    )
    assert part("logits", seq_len=8192, chunked_loss=False) == 4 * part(
        "logits", seq_len=2048, chunked_loss=False
    )
    # chunked (the default, as train.py computes the loss): one chunk's logits at any length, and a
    # sequence shorter than a chunk is one chunk of its own length
    chunked = part("logits (chunked loss)", seq_len=8192)
    assert (
        chunked
        == part("logits (chunked loss)", seq_len=2048)
        == part("logits", seq_len=1024, chunked_loss=False)
    )
    assert part("logits (chunked loss)", seq_len=512) == part("logits", seq_len=512, chunked_loss=False)


def test_seconds_per_epoch_from_tokens_and_a_stated_throughput() -> None:
    shape = shape_from_variant(CATALOG.variant("14b"))  # type: ignore[arg-type]
    m = machine("rtx4090-24gb")
    known = plan_training(
        shape, m, PlanRequest(tokens_per_epoch=1_200_000, tokens_per_s=1000.0), base="b", gguf=None
    )
    unknown = plan_training(shape, m, PlanRequest(tokens_per_epoch=1_200_000), base="b", gguf=None)
    assert known.seconds_per_epoch == 1200.0 and unknown.seconds_per_epoch is None
    assert unknown.to_json()["seconds_per_epoch"] is None and "one epoch: 1,200,000 tokens" in "\n".join(
        unknown.lines()
    )


# -- the shape of a GGUF: every part of a split one


def write_fake_14b(path: Path, n_tensors: int = 6) -> Path:
    """A GGUF with Hermes 4 14B's header numbers and a few small tensors (the plan reads the header)."""
    w = gguf.GGUFWriter(str(path), "qwen3")
    w.add_block_count(40)
    w.add_embedding_length(5120)
    w.add_head_count(40)
    w.add_head_count_kv(8)
    w.add_key_length(128)
    w.add_value_length(128)
    w.add_feed_forward_length(17408)
    w.add_context_length(40960)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1e6)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["a", "b"])
    for i in range(n_tensors):
        w.add_tensor(f"blk.{i}.ffn_up.weight", np.zeros((8, 16), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_every_part_of_a_split_gguf_is_counted(tmp_path: Path) -> None:
    single = write_fake_14b(tmp_path / "one.gguf")
    parts = resplit_gguf(single, tmp_path / "split.gguf", max_tensors=2)
    assert len(parts) == 3
    assert shape_from_gguf(single).n_params == 6 * 8 * 16
    assert shape_from_gguf(parts[0]).n_params == 6 * 8 * 16
    assert shape_from_gguf(parts[2]).n_params == 6 * 8 * 16  # any part names the whole set


def test_a_served_catalog_gguf_on_a_gpu_trains_qlora_on_its_hugging_face_repo(tmp_path: Path) -> None:
    served = write_fake_14b(tmp_path / "NousResearch_Hermes-4-14B-Q4_K_M.gguf")
    on_gpu = plan_target(None, None, None, served=str(served), gpu=True)
    assert (on_gpu.base, on_gpu.gguf, on_gpu.hf_base) == ("NousResearch/Hermes-4-14B", str(served), True)
    on_cpu = plan_target(None, None, None, served=str(served), gpu=False)
    assert (on_cpu.base, on_cpu.hf_base) == (str(served), False)
    given = plan_target(str(served), None, None, served=None, gpu=True)  # --base FILE.gguf: that file
    assert (given.base, given.hf_base) == (str(served), False)


# -- the command


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(tune_command, [str(a) for a in args], catch_exceptions=False)


def test_plan_json_on_a_simulated_24gb_gpu(tmp_path: Path) -> None:
    result = invoke(
        "--plan", "--json", "--variant", "14b", "--hardware", PROFILES / "rtx4090-24gb.json",
        "--state-dir", tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    for key in ("fits", "method", "base", "gguf", "max_seq_len", "devices", "ram_bytes", "seconds_per_epoch"):
        assert key in doc
    assert (doc["fits"], doc["method"], doc["base"]) == (True, "qlora-nf4", "NousResearch/Hermes-4-14B")
    assert doc["devices"][0]["index"] == 0 and doc["devices"][0]["bytes"] > 10 * GIB
    assert doc["seconds_per_epoch"] is None and doc["max_seq_len"] == 2048


def test_plan_on_a_simulated_cpu_box_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "x" * 400, "completion": "y" * 400}) + "\n")
    args = ["--plan", "--variant", "14b", "--hardware", PROFILES / "cpu-64gb.json", "--data", data]
    human = invoke(*args, "--tokens-per-s", "50", "--state-dir", tmp_path)
    assert human.exit_code == 1
    assert "does NOT fit" in human.output and "would fit: a CUDA GPU with" in human.output
    assert "one epoch: 212 tokens, 4 s" in human.output
    doc = json.loads(invoke(*args, "--json", "--state-dir", tmp_path).output)
    assert doc["fits"] is False and doc["method"] == "lora-fp32" and "of RAM" in doc["reason"]
    assert doc["devices"] == [] and doc["tokens_per_epoch"] == 212


@pytest.mark.parametrize(
    ("profile", "method", "expected"),
    [
        # asked for on a CPU box: 4 bits in RAM (bitsandbytes' CPU backend), with the warning
        ("cpu-64gb", "qlora-nf4", ("qlora-nf4", True, 0, "NousResearch/Hermes-4-14B")),
        # asked for on a GPU: the dequantized GGUF in bf16, which the 24 GB card cannot hold
        ("rtx4090-24gb", "lora-bf16", ("lora-bf16", False, 1, None)),
    ],
)
def test_plan_follows_method(tmp_path: Path, profile: str, method: str, expected: tuple[Any, ...]) -> None:
    result = invoke(
        "--plan", "--json", "--variant", "14b", "--method", method,
        "--hardware", PROFILES / f"{profile}.json", "--state-dir", tmp_path,
    )  # fmt: skip
    doc = json.loads(result.output)
    got = (doc["method"], doc["fits"], len(doc["devices"]), doc["base"] if expected[3] else None)
    assert got == expected, doc
    if profile == "cpu-64gb":
        assert any("trains for days" in n for n in doc["notes"])


def test_plan_refuses_qlora_on_a_gguf_base_in_one_line(tmp_path: Path) -> None:
    result = invoke(
        "--plan", "--base", str(write_fake_14b(tmp_path / "x.gguf")), "--method", "qlora-nf4",
        "--hardware", PROFILES / "rtx4090-24gb.json", "--state-dir", tmp_path,
    )  # fmt: skip
    assert result.exit_code == 1 and "cannot load a GGUF that way" in result.output


def test_plan_with_an_unknown_variant_is_one_line(tmp_path: Path) -> None:
    result = invoke(
        "--plan", "--variant", "3b", "--hardware", PROFILES / "cpu-64gb.json", "--state-dir", tmp_path
    )
    assert result.exit_code == 1 and "--variant 3b: not in the catalog" in result.output


def test_plan_for_the_served_gguf_on_a_simulated_24gb_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`hermesd tune --data F --name X --plan` with no --base: the served GGUF, trained as QLoRA on its
    Hugging Face repository (the served file stands in for the 14B: only its header is read)."""
    served = write_fake_14b(tmp_path / "NousResearch_Hermes-4-14B-Q4_K_M.gguf")
    monkeypatch.setenv("HERMESD_MODEL", str(served))
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "hello", "completion": "hi"}) + "\n")
    result = invoke(
        "--data", data, "--name", "x", "--plan", "--json", "--hardware", PROFILES / "rtx4090-24gb.json",
        "--state-dir", tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert (doc["method"], doc["base"], doc["gguf"]) == (
        "qlora-nf4",
        "NousResearch/Hermes-4-14B",
        str(served),
    )
    assert doc["max_seq_len"] == 256  # from the data: one short example


@pytest.mark.parametrize(
    ("variant", "repo"),
    [
        ("hermes-4-14b", "NousResearch/Hermes-4-14B"),
        ("hermes-4.3-36b", "NousResearch/Hermes-4.3-36B"),
        ("hermes-4-70b", "NousResearch/Hermes-4-70B"),
        ("hermes-4-405b", "NousResearch/Hermes-4-405B"),
    ],
)
def test_the_catalog_names_each_variants_hugging_face_repo(variant: str, repo: str) -> None:
    entry = CATALOG.variant(variant)
    assert entry is not None and entry.hf_repo == repo and "not checked against the hub" in entry.hf_repo_note


def _past_run(state: Path, name: str, base: str, method: str, tokens_per_s: float) -> None:
    folder = state / "runs" / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"base": {"ref": base}, "device": {"method": method}}))
    (folder / "metrics.json").write_text(json.dumps({"status": "finished", "tokens_per_s": tokens_per_s}))


def test_the_time_per_epoch_comes_from_a_run_measured_here(tmp_path: Path) -> None:
    """No throughput stated: the latest run of the same base and method on this machine gives it;
    runs of another base or method do not."""
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": "hello " * 50, "completion": "hi"}) + "\n" for _ in range(4))
    )
    args = [
        "--plan",
        "--json",
        "--variant",
        "14b",
        "--hardware",
        PROFILES / "rtx4090-24gb.json",
        "--data",
        data,
    ]
    state = tmp_path / "state"
    unknown = json.loads(invoke(*args, "--state-dir", state).output)
    assert unknown["seconds_per_epoch"] is None and unknown["tokens_per_epoch"] > 0
    _past_run(state, "other-base", "NousResearch/Hermes-4-70B", "qlora-nf4", 999.0)
    _past_run(state, "other-method", "NousResearch/Hermes-4-14B", "lora-bf16", 999.0)
    assert json.loads(invoke(*args, "--state-dir", state).output)["seconds_per_epoch"] is None
    _past_run(state, "legal", "NousResearch/Hermes-4-14B", "qlora-nf4", 250.0)
    doc = json.loads(invoke(*args, "--state-dir", state).output)
    assert doc["seconds_per_epoch"] == pytest.approx(doc["tokens_per_epoch"] / 250.0)
    assert any("250 tokens/s, measured by the run 'legal'" in n for n in doc["notes"])
    stated = json.loads(invoke(*args, "--state-dir", state, "--tokens-per-s", "100").output)
    assert stated["seconds_per_epoch"] == pytest.approx(stated["tokens_per_epoch"] / 100.0)


def test_gpus_are_numbered_as_torch_numbers_them() -> None:
    """NVML counts every GPU in PCI order; torch only what CUDA_VISIBLE_DEVICES leaves, in its own
    order: the plan's device map must use torch's ordinals (matched by UUID)."""
    from hermesd.runtime.hardware import Gpu as HwGpu
    from hermesd.runtime.hardware import Hardware
    from hermesd.runtime.tune.shape import machine_from_hardware, torch_numbering

    hw = Hardware(
        gpus=(
            HwGpu(0, "A", 24_576, 20_000, uuid="GPU-aaaa"),
            HwGpu(1, "B", 81_920, 80_000, uuid="GPU-bbbb"),
            HwGpu(2, "C", 81_920, 70_000, uuid="GPU-cccc"),
        ),
        ram_total_mib=65_536,
        ram_available_mib=60_000,
        cpu_cores=8,
    )
    # CUDA_VISIBLE_DEVICES=2,1: torch's 0 is NVML's 2 (torch gives UUIDs without the GPU- prefix)
    machine = machine_from_hardware(hw, True, ["cccc", "BBBB"])
    assert [(g.index, g.name, g.free_bytes // 2**20) for g in machine.gpus] == [
        (0, "C", 70_000),
        (1, "B", 80_000),
    ]
    assert torch_numbering(hw, ["dddd"]) is None  # a GPU NVML does not list: NVML's numbering stays
    assert [g.index for g in machine_from_hardware(hw, True, ["dddd"]).gpus] == [0, 1, 2]
    assert [g.index for g in machine_from_hardware(hw, True).gpus] == [0, 1, 2]  # a --hardware profile
