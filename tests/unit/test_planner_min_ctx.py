"""`--min-ctx`: the planner gives up slots, then the KV type, then quantization to reach the context
an agent needs, never beyond a variant's trained context (module doc of runtime/planner.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hermesd.models.catalog import load_catalog
from hermesd.runtime.hardware import Hardware, load_profile
from hermesd.runtime.planner import NoFit, Plan, PlanError, PlanRequest, plan

PROFILES = Path(__file__).resolve().parents[1] / "fixtures" / "hardware"
CATALOG = load_catalog(overlay=Path("/nonexistent"))
QRANK = {name: q.rank for name, q in CATALOG.quant_types.items()}
Q8 = ("q8_0",)


def machine(name: str) -> Hardware:
    return load_profile(PROFILES / f"{name}.json")


def planned(profile: str, **kwargs: object) -> Plan:
    result = plan(machine(profile), CATALOG, PlanRequest(**kwargs))  # type: ignore[arg-type]
    assert isinstance(result, Plan), result
    return result


@pytest.mark.parametrize("profile", ["rtx3060-12gb", "rtx4090-24gb", "a6000-48gb", "8xa100-80gb"])
def test_the_context_is_at_least_min_ctx_on_a_variant_trained_for_it(profile: str) -> None:
    p = planned(profile, min_ctx=65536, kv_fallback=Q8)
    assert p.context >= 65536
    assert CATALOG.variant(p.variant).context_max >= 65536  # type: ignore[union-attr]
    assert p.variant != "hermes-4-14b"  # trained for 40960


def test_slots_go_first_and_come_back_where_memory_allows() -> None:
    small = planned("rtx3060-12gb")
    assert (small.context, small.parallel) == (16384, 1)
    assert planned("8xa100-80gb", min_ctx=65536).parallel == 4
    assert planned("4xa100-80gb", min_ctx=65536).parallel == 1
    assert planned("4xa100-80gb").parallel == 4


@pytest.mark.parametrize(
    ("profile", "variant", "min_ctx"),
    [("cpu-32gb", "hermes-4.3-36b", 32768), ("rtx4090-24gb", "hermes-4-70b", 131072)],
)
def test_a_q8_0_kv_cache_comes_before_a_quant_below_q4_k_m(profile: str, variant: str, min_ctx: int) -> None:
    without = planned(profile, variant=variant, min_ctx=min_ctx)
    assert without.kv_type == "f16" and QRANK[without.quant] < QRANK["Q4_K_M"]
    traded = planned(profile, variant=variant, min_ctx=min_ctx, kv_fallback=Q8)
    assert traded.kv_type == "q8_0" and QRANK[traded.quant] >= QRANK["Q4_K_M"]
    assert traded.context == min_ctx
    assert any("KV cache q8_0" in r for r in traded.reasons)


def test_quantization_is_the_last_thing_given_up() -> None:
    p = planned("cpu-32gb", variant="hermes-4.3-36b", min_ctx=65536, kv_fallback=Q8)
    assert (p.context, p.kv_type, p.quant) == (65536, "q8_0", "Q2_K")


def test_no_fit_is_refused_rather_than_planned_smaller() -> None:
    result = plan(machine("cpu-4gb"), CATALOG, PlanRequest(min_ctx=65536, kv_fallback=Q8))
    assert isinstance(result, NoFit)
    assert plan(machine("cpu-32gb"), CATALOG, PlanRequest(min_ctx=65536)).__class__ is NoFit


def test_a_context_beyond_the_trained_one_is_an_error() -> None:
    with pytest.raises(PlanError, match="trained for at most 40960"):
        plan(machine("a6000-48gb"), CATALOG, PlanRequest(variant="hermes-4-14b", min_ctx=65536))
    with pytest.raises(PlanError, match="smaller than --min-ctx"):
        plan(machine("a6000-48gb"), CATALOG, PlanRequest(ctx=8192, min_ctx=65536))


def test_a_small_min_ctx_keeps_the_default_context() -> None:
    assert planned("rtx3060-12gb", min_ctx=4096).context == 16384
    assert planned("rtx3060-12gb", min_ctx=20000).context == 20000


def test_without_min_ctx_nothing_changes() -> None:
    for profile in ("rtx3060-12gb", "cpu-32gb", "mixed-a6000-3090"):
        assert planned(profile) == planned(profile, kv_fallback=())


@pytest.mark.parametrize(
    ("kv_flag", "kv_type", "quant"), [((), "q8_0", "Q4_K_M"), (("--kv-type", "f16"), "f16", "Q2_K")]
)
def test_plan_min_ctx_trades_the_kv_type_unless_it_is_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kv_flag: tuple[str, ...], kv_type: str, quant: str
) -> None:
    import json

    from click.testing import CliRunner

    from hermesd.cli.plan import plan_command

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HERMESD_CATALOG_OVERLAY", str(tmp_path / "overlay.json"))
    args = ["--hardware", str(PROFILES / "cpu-32gb.json"), "--variant", "hermes-4.3-36b", "--json"]
    result = CliRunner().invoke(plan_command, [*args, "--no-verify", "--min-ctx", "32768", *kv_flag])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["context"], doc["kv_type"], doc["quant"]) == (32768, kv_type, quant)
