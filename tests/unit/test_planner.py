"""The fit planner against a table of machines (profiles in tests/fixtures/hardware/).

Each row says what a user would check us against and why the planner must answer that way. The
expectations are about the choice (variant, quant, where the layers go); the byte counts are
checked against the arithmetic rules, not copied from the planner's output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hermesd.models.catalog import load_catalog
from hermesd.runtime.engine.context_settings import ContextSettings
from hermesd.runtime.hardware import Hardware, hardware_from_dict, load_profile
from hermesd.runtime.memory import GIB, MIB, kv_bytes_per_layer
from hermesd.runtime.planner import NoFit, Plan, PlanError, PlanRequest, plan, plan_to_json

PROFILES = Path(__file__).resolve().parents[1] / "fixtures" / "hardware"
CATALOG = load_catalog(overlay=Path("/nonexistent"))
QRANK = {name: q.rank for name, q in CATALOG.quant_types.items()}


def machine(name: str) -> Hardware:
    return load_profile(PROFILES / f"{name}.json")


@dataclass(frozen=True)
class Row:
    profile: str
    why: str
    request: dict[str, Any] = field(default_factory=dict)
    variant: str | None = None
    quant: str | None = None
    min_quant: str | None = None
    full_offload: bool | None = None
    cpu_layers: bool | None = None  # True: some layers in RAM
    weights_gb: tuple[float, float] | None = None  # decimal GB, as users quote file sizes
    gpus_used: int | None = None


TABLE = [
    Row(
        "rtx3060-12gb",
        "a 12 GB consumer GPU runs 14B at Q4_K_M (~9 GB of weights) entirely on the GPU with 16k context; "
        "36B/70B would spill most layers into RAM (< 10 tok/s)",
        variant="hermes-4-14b",
        quant="Q4_K_M",
        full_offload=True,
        weights_gb=(8.5, 9.0),
    ),
    Row(
        "rtx4080-16gb",
        "16 GB: 14B Q8_0 (15.7 GB file, 13.9 GiB on the GPU without token_embd) plus 2.5 GiB of f16 KV at "
        "16k exceeds 15.5 GiB free, so the default is Q6_K, entirely on the GPU",
        variant="hermes-4-14b",
        quant="Q6_K",
        full_offload=True,
    ),
    Row(
        "rtx4080-16gb",
        "the issue's seed figure 'a 16 GB GPU can hold 14B Q8_0' holds with a 4k context",
        request={"quant": "Q8_0", "ctx": 4096},
        variant="hermes-4-14b",
        quant="Q8_0",
        full_offload=True,
        weights_gb=(15.0, 15.8),
    ),
    Row(
        "rtx4080-16gb",
        "Q8_0 forced at the default 16k context: a few layers go to RAM rather than shrinking the context",
        request={"quant": "Q8_0"},
        variant="hermes-4-14b",
        quant="Q8_0",
        full_offload=False,
        cpu_layers=True,
    ),
    Row(
        "a6000-48gb",
        "a 48 GB GPU runs 70B Q4_K_M (~42.5 GB) entirely on the GPU; Q5_K_M (~50 GB) cannot fit",
        variant="hermes-4-70b",
        quant="Q4_K_M",
        full_offload=True,
        weights_gb=(40.0, 42.6),
    ),
    Row(
        "2x3090-24gb",
        "two 24 GB GPUs split 70B Q4_K_M layer-wise, half each",
        variant="hermes-4-70b",
        quant="Q4_K_M",
        full_offload=True,
        gpus_used=2,
    ),
    Row(
        "8xa100-80gb",
        "8 x 80 GB holds 405B at Q8_0 (~431 GB) entirely on the GPUs: Q4_K_M or better",
        variant="hermes-4-405b",
        min_quant="Q4_K_M",
        full_offload=True,
        gpus_used=8,
    ),
    Row(
        "4xa100-80gb",
        "4 x 80 GB holds 405B Q4_K_M (~244 GB) and even Q5_K_M (~287 GB) entirely on the GPUs",
        variant="hermes-4-405b",
        min_quant="Q4_K_M",
        full_offload=True,
        gpus_used=4,
    ),
    Row(
        "rtx4090-24gb-512gb-ram",
        "one 24 GB GPU + 512 GB RAM runs 405B split GPU/CPU when asked: most layers in RAM",
        request={"variant": "hermes-4-405b"},
        variant="hermes-4-405b",
        min_quant="Q4_K_M",
        full_offload=False,
        cpu_layers=True,
        gpus_used=1,
    ),
    Row(
        "rtx4090-24gb-512gb-ram",
        "by default the same box runs 4.3-36B Q4_K_M with a couple of layers in RAM (~20 tok/s): 405B split "
        "would decode at well under 1 tok/s and 70B at ~2 tok/s (RAM at the default 50 GB/s)",
        variant="hermes-4.3-36b",
        quant="Q4_K_M",
        full_offload=False,
        cpu_layers=True,
    ),
    Row(
        "rtx4090-24gb-512gb-ram",
        "--prefer speed: full GPU offload of a smaller variant beats a CPU split of a larger one",
        request={"prefer": "speed"},
        variant="hermes-4-14b",
        quant="Q8_0",
        full_offload=True,
    ),
    Row(
        "cpu-32gb",
        "a CPU-only 32 GB machine gets 14B at a quant that fits RAM; nothing reaches 10 tok/s at 50 GB/s, "
        "so the fastest option at Q4_K_M or better",
        variant="hermes-4-14b",
        min_quant="Q4_K_M",
        cpu_layers=True,
        gpus_used=0,
    ),
    Row(
        "mixed-4090-3060",
        "24 GB + 12 GB: 4.3-36B Q6_K across both GPUs, more layers on the bigger one; 70B would need RAM",
        variant="hermes-4.3-36b",
        quant="Q6_K",
        full_offload=True,
        gpus_used=2,
    ),
    Row(
        "mixed-a6000-3090",
        "48 GB + 24 GB: 70B Q6_K (57.9 GB, two shards) across both, about 2:1",
        variant="hermes-4-70b",
        quant="Q6_K",
        full_offload=True,
        gpus_used=2,
    ),
]


@pytest.mark.parametrize("row", TABLE, ids=[f"{r.profile}-{r.request or 'default'}" for r in TABLE])
def test_machine_table(row: Row) -> None:
    hw = machine(row.profile)
    result = plan(hw, CATALOG, PlanRequest(**row.request))
    assert isinstance(result, Plan), getattr(result, "reason", result)
    if row.variant:
        assert result.variant == row.variant, row.why
    if row.quant:
        assert result.quant == row.quant, row.why
    if row.min_quant:
        assert QRANK[result.quant] >= QRANK[row.min_quant], row.why
    if row.full_offload is not None:
        assert result.full_offload is row.full_offload, row.why
    cpu = result.placement[-1]
    if row.cpu_layers is not None:
        assert (cpu.layers > 0) is row.cpu_layers, row.why
    if row.weights_gb is not None:
        lo, hi = row.weights_gb
        assert lo <= result.estimate.weights_bytes / 1e9 <= hi, row.why
    if row.gpus_used is not None:
        assert sum(1 for d in result.placement if d.device == "gpu" and d.layers) == row.gpus_used, row.why
    assert_consistent(result, hw)


def assert_consistent(result: Plan, hw: Hardware) -> None:
    """Rules every plan obeys, whatever the machine."""
    # Every device holds what the plan puts there.
    for d in result.placement:
        assert d.bytes == d.weights_bytes + d.kv_bytes + d.compute_bytes + d.margin_bytes
        assert d.bytes <= d.capacity_bytes, d
    # Layers add up; llama.cpp's n_gpu_layers counts the output layer when everything is offloaded.
    gpu_layers = sum(d.layers for d in result.placement if d.device == "gpu")
    assert gpu_layers + result.placement[-1].layers == result.layers_total
    assert result.n_gpu_layers == gpu_layers + (1 if result.full_offload else 0)
    if result.tensor_split:
        assert sum(result.tensor_split) == result.n_gpu_layers
        assert len(result.tensor_split) == len(hw.gpus)
    # The KV cache is the formula of the issue: layers x KV heads x head dim x 2 x ctx x parallel x bytes.
    variant = CATALOG.variant(result.variant)
    assert variant is not None
    per_layer = kv_bytes_per_layer(variant, result.settings.kv_cells, result.kv_type)
    assert result.estimate.kv_bytes == per_layer * result.layers_total
    assert result.context >= 4096
    assert result.arithmetic and result.reasons


SLOTS = [
    # (profile, request, slots, why)
    ("cpu-32gb", {}, 4, "CPU only with room to spare: 4 streams (the issue's default on CPU)"),
    ("rtx3060-12gb", {}, 1, "14B Q4_K_M at 16k leaves 0.3 GiB on a 12 GB card: no room for a second KV"),
    ("mixed-a6000-3090", {}, 3, "70B Q6_K over 72 GB leaves room for two more 16k KV caches, not three"),
    (
        "rtx3060-12gb",
        {"ctx": 4096},
        2,
        "at 4k the memory freed first buys a better quant (Q5_K_M), and two 4k KV caches fit beside it",
    ),
    ("rtx3060-12gb", {"parallel": 2, "ctx": 4096}, 2, "an explicit --parallel is honoured"),
]


@pytest.mark.parametrize(("profile", "request_kwargs", "slots", "why"), SLOTS)
def test_slots_are_the_most_up_to_four_that_fit_beside_the_model(
    profile: str, request_kwargs: dict[str, Any], slots: int, why: str
) -> None:
    hw = machine(profile)
    result = plan(hw, CATALOG, PlanRequest(**request_kwargs))
    assert isinstance(result, Plan)
    assert result.parallel == slots, why
    assert_consistent(result, hw)
    # Slots never change the model or move layers: the plan for one stream is the same model, split
    # the same way.
    one = plan(hw, CATALOG, PlanRequest(**{**request_kwargs, "parallel": 1}))
    assert isinstance(one, Plan)
    assert (result.variant, result.quant, result.context, result.n_gpu_layers) == (
        one.variant,
        one.quant,
        one.context,
        one.n_gpu_layers,
    )
    if "parallel" not in request_kwargs:
        if slots < 4:  # one more slot would not fit with the same placement
            more = plan(hw, CATALOG, PlanRequest(**{**request_kwargs, "parallel": slots + 1}))
            assert not isinstance(more, Plan) or (more.variant, more.quant, more.n_gpu_layers) != (
                result.variant,
                result.quant,
                result.n_gpu_layers,
            ), why
        assert any(r.startswith("slots:") for r in result.reasons)


def test_kv_formula_matches_the_reference_table() -> None:
    # shared/reference/hermes4.md 1.3: 14B f16 KV is 160 KiB per token -> 40,960 ctx = 6.25 GiB;
    # 70B 320 KiB per token -> 65,536 ctx = 20 GiB.
    v14, v70 = CATALOG.variant("hermes-4-14b"), CATALOG.variant("hermes-4-70b")
    assert v14 is not None and v70 is not None
    assert kv_bytes_per_layer(v14, 40960, "f16") * v14.layers == 6.25 * GIB
    assert kv_bytes_per_layer(v70, 65536, "f16") * v70.layers == 20 * GIB
    # q8_0 stores 32 values in 34 bytes; two parallel sequences need twice the cells.
    assert kv_bytes_per_layer(v14, 4096, "q8_0") * 32 == kv_bytes_per_layer(v14, 4096, "f16") * 17
    two, one = ContextSettings(ctx=16384, parallel=2), ContextSettings(ctx=16384, parallel=1)
    assert two.kv_cells == 2 * one.kv_cells


def test_two_equal_gpus_get_half_each() -> None:
    result = plan(machine("2x3090-24gb"), CATALOG, PlanRequest())
    assert isinstance(result, Plan)
    first, second = result.tensor_split
    # The output layer rides on the last GPU, so the split may differ by one unit at most.
    assert abs(first - second) <= 2


@pytest.mark.parametrize("profile", ["mixed-4090-3060", "mixed-a6000-3090"])
def test_mixed_gpus_split_in_proportion_to_free_memory(profile: str) -> None:
    hw = machine(profile)
    result = plan(hw, CATALOG, PlanRequest())
    assert isinstance(result, Plan)
    share = result.tensor_split[0] / sum(result.tensor_split)
    free_share = hw.gpus[0].memory_free_mib / sum(g.memory_free_mib for g in hw.gpus)
    assert abs(share - free_share) < 0.06


def test_sixteen_gb_says_how_q8_would_fit() -> None:
    result = plan(machine("rtx4080-16gb"), CATALOG, PlanRequest())
    assert isinstance(result, Plan)
    hint = [r for r in result.reasons if r.startswith("Q8_0 would fit")]
    assert hint, result.reasons
    ctx = int(hint[0].rsplit(" ", 1)[1])
    assert 4096 <= ctx < 16384
    # ...and the hint is true.
    forced = plan(machine("rtx4080-16gb"), CATALOG, PlanRequest(quant="Q8_0", ctx=ctx))
    assert isinstance(forced, Plan) and forced.full_offload


def test_quality_and_speed_differ_where_a_split_is_usable() -> None:
    hw = machine("rtx4090-24gb")
    quality = plan(hw, CATALOG, PlanRequest(prefer="quality"))
    speed = plan(hw, CATALOG, PlanRequest(prefer="speed"))
    assert isinstance(quality, Plan) and isinstance(speed, Plan)
    assert quality.variant == "hermes-4.3-36b" and not quality.full_offload
    assert quality.estimate.tokens_per_s >= 10
    assert speed.full_offload and speed.variant == "hermes-4-14b"


def test_a_faster_ram_changes_the_cpu_only_choice() -> None:
    # The speed model is the reason behind the CPU-only choice: with 8-channel server RAM
    # (200 GB/s) 14B Q8_0 decodes above 10 tok/s and becomes the quality choice.
    slow = plan(machine("cpu-32gb"), CATALOG, PlanRequest())
    fast_hw = hardware_from_dict({"gpus": [], "ram_total_mib": 32768, "ram_bandwidth_gbps": 200})
    fast = plan(fast_hw, CATALOG, PlanRequest())
    assert isinstance(slow, Plan) and isinstance(fast, Plan)
    assert QRANK[fast.quant] > QRANK[slow.quant]


def test_default_context_shrinks_only_when_nothing_fits() -> None:
    # 14B Q2_K at 16k needs ~9 GiB of RAM; at 4k ~7.3 GiB: an 8.5 GiB machine gets a shorter context.
    hw = hardware_from_dict({"gpus": [], "ram_total_mib": 9000, "ram_available_mib": 8704})
    result = plan(hw, CATALOG, PlanRequest())
    assert isinstance(result, Plan)
    assert 4096 <= result.context < 16384
    # An explicit context is never changed.
    assert isinstance(plan(hw, CATALOG, PlanRequest(ctx=16384)), NoFit)


@pytest.mark.parametrize(
    "profile,request_kwargs",
    [
        ("cpu-4gb", {}),
        ("rtx3060-12gb", {"variant": "hermes-4-405b"}),
    ],
)
def test_too_little_memory_says_what_is_missing(profile: str, request_kwargs: dict[str, Any]) -> None:
    result = plan(machine(profile), CATALOG, PlanRequest(**request_kwargs))
    assert isinstance(result, NoFit)
    assert result.missing_bytes > 0
    assert f"{result.missing_bytes / GIB:.1f} GiB missing" in result.reason
    assert plan_to_json(result) == {
        "fits": False,
        "reason": result.reason,
        "missing_bytes": result.missing_bytes,
    }


def test_estimated_sizes_are_flagged() -> None:
    result = plan(machine("8xa100-80gb"), CATALOG, PlanRequest(quant="Q4_K_M"))
    assert isinstance(result, Plan)
    assert result.estimate.size_source == "estimated"
    assert any("ESTIMATED" in line for line in result.arithmetic)
    exact = plan(machine("rtx4080-16gb"), CATALOG, PlanRequest(quant="Q6_K"))
    assert isinstance(exact, Plan) and exact.estimate.size_source == "exact"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"variant": "hermes-5"}, "unknown variant"),
        ({"variant": "hermes-4-405b", "quant": "BF16"}, "no BF16"),
        ({"kv_type": "q5_9"}, "unknown KV cache type"),
        ({"kv_type": "q8_0", "flash_attn": False}, "needs flash attention"),
        ({"variant": "hermes-4-14b", "ctx": 65536}, "at most 40960"),
        ({"parallel": 0}, "at least 1"),
    ],
)
def test_bad_requests_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        plan(machine("rtx3060-12gb"), CATALOG, PlanRequest(**kwargs))


def test_short_variant_names_are_accepted() -> None:
    result = plan(machine("a6000-48gb"), CATALOG, PlanRequest(variant="14b"))
    assert isinstance(result, Plan) and result.variant == "hermes-4-14b"


PLAN_SCHEMA = {
    "type": "object",
    "required": [
        "fits",
        "variant",
        "quant",
        "context",
        "parallel",
        "layers_total",
        "placement",
        "files",
        "estimate",
    ],
    "properties": {
        "fits": {"const": True},
        "variant": {"enum": ["hermes-4-14b", "hermes-4.3-36b", "hermes-4-70b", "hermes-4-405b"]},
        "quant": {"type": "string"},
        "context": {"type": "integer", "minimum": 4096},
        "parallel": {"type": "integer", "minimum": 1},
        "layers_total": {"type": "integer"},
        "placement": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["device", "layers", "bytes"],
                "properties": {"device": {"enum": ["gpu", "cpu"]}, "index": {"type": "integer"}},
            },
        },
        "files": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "estimate": {
            "type": "object",
            "required": ["weights_bytes", "kv_bytes", "compute_bytes", "margin_bytes"],
        },
    },
}


@pytest.mark.parametrize("profile", sorted(p.stem for p in PROFILES.glob("*.json") if p.stem != "cpu-4gb"))
def test_plan_json_follows_the_contract(profile: str) -> None:
    result = plan(machine(profile), CATALOG, PlanRequest())
    doc = plan_to_json(result)
    jsonschema.validate(doc, PLAN_SCHEMA)
    gpu_entries = [p for p in doc["placement"] if p["device"] == "gpu"]
    assert all("index" in p for p in gpu_entries)
    assert doc["placement"][-1]["device"] == "cpu"


gpu_strategy = st.builds(
    lambda total, used: {"name": "GPU", "memory_total_mib": total, "memory_free_mib": total - used},
    st.integers(2048, 98304),
    st.integers(0, 1024),
)


@settings(max_examples=60, deadline=None)
@given(
    gpus=st.lists(gpu_strategy, max_size=4),
    ram=st.integers(2048, 1 << 20),
    prefer=st.sampled_from(["quality", "speed"]),
    parallel=st.integers(1, 4),
    kv=st.sampled_from(["f16", "q8_0"]),
)
def test_any_machine_gets_a_consistent_plan_or_a_reason(
    gpus: list[dict[str, Any]], ram: int, prefer: str, parallel: int, kv: str
) -> None:
    hw = hardware_from_dict({"gpus": gpus, "ram_total_mib": ram})
    result = plan(hw, CATALOG, PlanRequest(prefer=prefer, parallel=parallel, kv_type=kv))
    if isinstance(result, NoFit):
        assert result.missing_bytes > 0 and "missing" in result.reason
    else:
        assert_consistent(result, hw)
        assert result.placement[-1].capacity_bytes == hw.ram_available_mib * MIB
