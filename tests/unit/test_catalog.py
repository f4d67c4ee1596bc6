"""The catalog data and its helpers: architecture facts, sizes, file names, the refresh overlay."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from hermesd.models.catalog import (
    CatalogError,
    CatalogFile,
    QuantEntry,
    apply_overlay,
    catalog_from_dict,
    load_catalog,
    overlay_from_listing,
    packaged_catalog_path,
    parse_model_ref,
    quant_from_filename,
    read_overlay,
    weight_layout,
    write_overlay,
)

NO_OVERLAY = Path("/nonexistent/overlay.json")
CATALOG = load_catalog(overlay=NO_OVERLAY)


# shared/reference/hermes4.md 1.2 (layers, hidden, heads, KV heads, head dim, intermediate, vocab, context)
@pytest.mark.parametrize(
    "vid,numbers,params_b",
    [
        ("hermes-4-14b", (40, 5120, 40, 8, 128, 17408, 151936, 40960), 14.8),
        ("hermes-4.3-36b", (64, 5120, 80, 8, 128, 27648, 155136, 524288), 36.2),
        ("hermes-4-70b", (80, 8192, 64, 8, 128, 28672, 128256, 131072), 70.6),
        ("hermes-4-405b", (126, 16384, 128, 8, 128, 53248, 128256, 131072), 405.8),
    ],
)
def test_architecture_numbers(vid: str, numbers: tuple[int, ...], params_b: float) -> None:
    v = CATALOG.variant(vid)
    assert v is not None
    got = (v.layers, v.hidden_size, v.heads, v.kv_heads, v.head_dim, v.intermediate_size, v.vocab_size)
    assert (*got, v.context_max) == numbers
    # The parameter count derived from the numbers matches the published model sizes.
    assert v.total_params() / 1e9 == pytest.approx(params_b, rel=0.01)


@pytest.mark.parametrize("vid", ["hermes-4-14b", "hermes-4.3-36b", "hermes-4-70b", "hermes-4-405b"])
def test_every_variant_has_the_usual_quants(vid: str) -> None:
    v = CATALOG.variant(vid)
    assert v is not None
    assert {"Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"} <= {q.quant for q in v.quants}


def test_variants_are_ordered_by_size() -> None:
    assert [v.id for v in CATALOG.ordered()] == [
        "hermes-4-405b",
        "hermes-4-70b",
        "hermes-4.3-36b",
        "hermes-4-14b",
    ]


def _known_sizes() -> list[tuple[str, str, int]]:
    out = []
    for v in CATALOG.variants:
        for q in v.quants:
            size = q.known_size()
            if size is not None:
                out.append((v.id, q.quant, size))
    return out


@pytest.mark.parametrize("vid,quant,size", _known_sizes())
def test_bits_per_weight_estimates_agree_with_published_sizes(vid: str, quant: str, size: int) -> None:
    """The estimate used where no size is known, checked on every quant whose size is known."""
    v = CATALOG.variant(vid)
    assert v is not None
    entry = v.quant(quant)
    assert entry is not None
    unknown = QuantEntry(quant, entry.repo, (), "estimated")
    estimate = weight_layout(v, unknown, CATALOG.quant_types[quant]).total
    assert estimate == pytest.approx(size, rel=0.015)


def test_known_sizes_are_distributed_over_layers_exactly() -> None:
    v = CATALOG.variant("hermes-4-14b")
    assert v is not None
    q8 = v.quant("Q8_0")
    assert q8 is not None and q8.size_kind == "exact"
    layout = weight_layout(v, q8, CATALOG.quant_types["Q8_0"])
    assert layout.total == 15_698_534_336
    assert len(layout.layer_bytes) == 40 and layout.source == "exact"


def test_split_files_are_expanded() -> None:
    v = CATALOG.variant("hermes-4-405b")
    assert v is not None
    q4 = v.quant("Q4_K_M")
    assert q4 is not None
    assert len(q4.files) == 18
    assert q4.files[0].path == "NousResearch.Hermes-4-405B.Q4_K_M-00001-of-00018.gguf"
    unknown = v.quant("Q8_0")
    assert unknown is not None and unknown.file_ids() == (
        "DevQuasar/NousResearch.Hermes-4-405B-GGUF/*Q8_0*.gguf",
    )


@pytest.mark.parametrize(
    "name,quant",
    [
        ("NousResearch_Hermes-4-14B-Q4_K_M.gguf", "Q4_K_M"),
        ("Hermes-4-70B-Q6_K-00001-of-00002.gguf", "Q6_K"),
        ("NousResearch.Hermes-4-405B.Q5_K_M-00006-of-00022.gguf", "Q5_K_M"),
        ("NousResearch_Hermes-4-70B-bf16/NousResearch_Hermes-4-70B-bf16-00001-of-00003.gguf", "BF16"),
        ("Hermes-4.3-36B-Q8_0.gguf", "Q8_0"),
        ("Hermes-4-70B-UD-Q4_K_XL.gguf", None),
        ("tokenizer.json", None),
    ],
)
def test_quant_from_filename(name: str, quant: str | None) -> None:
    assert quant_from_filename(name) == quant


@pytest.mark.parametrize(
    "ref,expected",
    [
        ("hermes-4-14b", ("hermes-4-14b", None)),
        ("14b:q4_k_m", ("hermes-4-14b", "Q4_K_M")),
        ("Hermes-4-70B:Q6_K", ("hermes-4-70b", "Q6_K")),
        ("4.3-36b", ("hermes-4.3-36b", None)),
        ("405b:Q8_0", ("hermes-4-405b", "Q8_0")),
    ],
)
def test_parse_model_ref(ref: str, expected: tuple[str, str | None]) -> None:
    assert parse_model_ref(ref, CATALOG) == expected


@pytest.mark.parametrize(
    "ref,message", [("hermes-9", "unknown variant 'hermes-9'"), ("405b:BF16", "has no quant 'BF16'")]
)
def test_parse_model_ref_errors(ref: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        parse_model_ref(ref, CATALOG)


def _packaged() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(packaged_catalog_path().read_text())
    return data


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d["variants"][0].pop("layers"), r"variants\[0\]\.layers: missing"),
        (lambda d: d["variants"][1].update(heads=0), r"variants\[1\]\.heads: must be positive"),
        (lambda d: d["variants"][0]["quants"][0].update(quant="Q9_X"), "not in quant_types"),
        (lambda d: d["variants"][0]["quants"][0].update(size_kind="guess"), "size_kind"),
        (lambda d: d["variants"][2]["quants"][1].pop("size_bytes"), "no size is given"),
        (lambda d: d["variants"].append(copy.deepcopy(d["variants"][0])), "duplicate variant"),
    ],
)
def test_malformed_catalog_names_the_field(mutate: Any, message: str) -> None:
    data = _packaged()
    mutate(data)
    with pytest.raises(CatalogError, match=message):
        catalog_from_dict(data, "catalog.json")


def test_overlay_replaces_files_with_what_the_hub_lists(tmp_path: Path) -> None:
    listing = [
        CatalogFile("Hermes-4-70B-Q8_0-00001-of-00002.gguf", 40_000_000_000, "a" * 64),
        CatalogFile("Hermes-4-70B-Q8_0-00002-of-00002.gguf", 34_975_000_000, "b" * 64),
        CatalogFile("Hermes-4-70B-Q4_K_M.gguf", 42_520_000_000, "c" * 64),
        CatalogFile("README.md", 1000, None),
    ]
    entries = overlay_from_listing(CATALOG, "lmstudio-community/Hermes-4-70B-GGUF", "f" * 40, listing)
    assert {(e.variant, e.quant) for e in entries} == {("hermes-4-70b", "Q8_0"), ("hermes-4-70b", "Q4_K_M")}
    path = tmp_path / "overlay.json"
    write_overlay(path, entries, "2026-01-01T00:00:00Z")
    refreshed_at, back = read_overlay(path)
    assert refreshed_at == "2026-01-01T00:00:00Z" and back == entries

    catalog = load_catalog(overlay=path)
    v = catalog.variant("hermes-4-70b")
    assert v is not None
    q8 = v.quant("Q8_0")
    assert q8 is not None
    assert q8.size_kind == "exact" and q8.known_size() == 74_975_000_000
    assert q8.files[0].sha256 == "a" * 64 and q8.revision == "f" * 40
    # Entries the overlay does not mention are untouched.
    q6 = v.quant("Q6_K")
    packaged = CATALOG.variant("hermes-4-70b")
    assert packaged is not None and q6 == packaged.quant("Q6_K")
    assert catalog.refreshed_at == "2026-01-01T00:00:00Z"


def test_broken_overlay_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "overlay.json"
    path.write_text("{not json")
    with pytest.raises(CatalogError, match=r"overlay\.json: cannot read the catalog overlay"):
        load_catalog(overlay=path)


def test_find_file_labels_local_files() -> None:
    found = CATALOG.find_file(
        "bartowski/NousResearch_Hermes-4-14B-GGUF", "NousResearch_Hermes-4-14B-Q6_K.gguf"
    )
    assert found is not None
    assert (found[0].id, found[1].quant) == ("hermes-4-14b", "Q6_K")
    # Unknown-name entries match on the quant token.
    found = CATALOG.find_file(
        "DevQuasar/NousResearch.Hermes-4-405B-GGUF", "NousResearch.Hermes-4-405B.Q8_0-00001-of-00019.gguf"
    )
    assert found is not None and found[1].quant == "Q8_0"
    assert apply_overlay(CATALOG, []).variants == CATALOG.variants
