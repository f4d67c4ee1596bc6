"""Draft models in the catalog and the planner (serve/plan --draft-model, issue 17): the catalog names
a draft per variant, and a plan that will run one keeps its weights, KV cache and compute buffer free
beside the model, with the real sizes of Hermes 4's drafts."""

from __future__ import annotations

from pathlib import Path

import pytest

from hermesd.models.catalog import CatalogError, catalog_from_dict, load_catalog, weight_layout
from hermesd.runtime.engine.context_settings import ContextSettings
from hermesd.runtime.hardware import load_profile
from hermesd.runtime.memory import GIB, draft_model_bytes, kv_bytes
from hermesd.runtime.planner import DraftRequest, Plan, PlanRequest, plan, plan_to_json

PROFILES = Path(__file__).resolve().parents[1] / "fixtures" / "hardware"
CATALOG = load_catalog(overlay=Path("/nonexistent"))


@pytest.mark.parametrize(
    ("variant", "draft"),
    [
        ("hermes-4-14b", "qwen3-0.6b"),
        ("hermes-4-70b", "llama-3.2-1b"),
        ("hermes-4-405b", "llama-3.2-1b"),
        ("hermes-4.3-36b", None),
    ],
)
def test_each_variant_names_a_draft_of_its_vocabulary(variant: str, draft: str | None) -> None:
    v = CATALOG.variant(variant)
    assert v is not None
    d = CATALOG.drafts.get(v.draft)
    assert (d.id if d else None) == draft
    if d is not None:
        # a draft must share the vocabulary (llama.cpp allows 128 tokens of padding difference)
        assert d.vocab_size == v.vocab_size and d.arch == v.arch
        assert len(d.quants) == 1 and d.quants[0].files


def test_a_variant_naming_an_unknown_draft_is_a_catalog_error() -> None:
    import json

    data = json.loads((Path(__file__).resolve().parents[2] / "models/data/catalog.json").read_text())
    data["variants"][0]["draft"] = "no-such-draft"
    with pytest.raises(CatalogError, match="no-such-draft"):
        catalog_from_dict(data)


@pytest.mark.parametrize(
    ("name", "arch", "layers", "variant"),
    [
        ("NousResearch_Hermes-4-14B-Q4_K_M.gguf", "qwen3", 40, "hermes-4-14b"),  # by file name
        ("my-own-quant.gguf", "qwen3", 40, "hermes-4-14b"),  # by architecture and layers
        ("my-own-quant.gguf", "llama", 80, "hermes-4-70b"),
        ("tiny.gguf", "qwen3", 3, None),
    ],
)
def test_which_variant_a_file_is(name: str, arch: str, layers: int, variant: str | None) -> None:
    found = CATALOG.variant_of_file(name, arch, layers)
    assert (found.id if found else None) == variant


def test_the_draft_arithmetic_for_qwen3_06b_at_16k() -> None:
    """Qwen3 0.6B Q8_0: about 0.6 GB of weights; its KV is 28 layers x 8 heads x 128 x 2 (K, V) x 2
    bytes = 112 KiB per token, 1.75 GiB at 16,384 tokens (f16)."""
    d = CATALOG.drafts["qwen3-0.6b"]
    settings = ContextSettings(ctx=16384, parallel=1)
    layout = weight_layout(d, d.quants[0], CATALOG.quant_types["Q8_0"])
    assert 0.55e9 < layout.total < 0.85e9
    assert kv_bytes(d, settings) == 28 * 8 * 128 * 2 * 2 * 16384
    total = draft_model_bytes(d, layout, settings)
    assert layout.total + kv_bytes(d, settings) < total < layout.total + kv_bytes(d, settings) + GIB


def test_a_plan_with_a_draft_keeps_its_bytes_free_on_the_gpu() -> None:
    hw = load_profile(PROFILES / "rtx4090-24gb.json")
    request = PlanRequest(variant="hermes-4-14b", quant="Q4_K_M", ctx=16384, parallel=1)
    without, with_draft = plan(hw, CATALOG, request), plan(hw, CATALOG, PlanRequest(**{
        **request.__dict__, "draft": DraftRequest()}))  # fmt: skip
    assert isinstance(without, Plan) and isinstance(with_draft, Plan)
    d = CATALOG.drafts["qwen3-0.6b"]
    expected = draft_model_bytes(
        d, weight_layout(d, d.quants[0], CATALOG.quant_types["Q8_0"]), with_draft.settings
    )
    assert with_draft.draft == "qwen3-0.6b" and with_draft.estimate.draft_bytes == expected
    assert with_draft.estimate.margin_bytes - without.estimate.margin_bytes == expected
    for device in with_draft.placement:
        assert device.bytes <= device.capacity_bytes
    doc = plan_to_json(with_draft)
    assert doc["draft"] == "qwen3-0.6b" and doc["estimate"]["draft_bytes"] == expected
    assert any(r.startswith("draft model: qwen3-0.6b") for r in with_draft.reasons)
    assert plan_to_json(without)["draft"] is None


def test_a_draft_that_does_not_fit_changes_the_plan() -> None:
    """14B Q4_K_M at 16k leaves 0.3 GiB on a 12 GB card: the draft's 2.5 GiB must come from
    somewhere, so the plan changes (layers off the GPU, a smaller quant or context) rather than
    overcommitting the card."""
    hw = load_profile(PROFILES / "rtx3060-12gb.json")
    request = PlanRequest(variant="hermes-4-14b", ctx=16384, parallel=1)
    without = plan(hw, CATALOG, request)
    with_draft = plan(
        hw, CATALOG, PlanRequest(variant="hermes-4-14b", ctx=16384, parallel=1, draft=DraftRequest())
    )
    assert isinstance(without, Plan) and isinstance(with_draft, Plan)
    assert (with_draft.quant, with_draft.n_gpu_layers) != (without.quant, without.n_gpu_layers)
    for device in with_draft.placement:
        assert device.bytes <= device.capacity_bytes


def test_no_draft_for_36b_says_so() -> None:
    hw = load_profile(PROFILES / "a6000-48gb.json")
    result = plan(hw, CATALOG, PlanRequest(variant="hermes-4.3-36b", draft=DraftRequest()))
    assert isinstance(result, Plan)
    assert result.draft is None and result.estimate.draft_bytes == 0
    assert any("catalog has none" in r for r in result.reasons)
