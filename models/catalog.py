"""The Hermes 4 catalog: variants, their architecture numbers, and the GGUF files of each quant.

The facts live in `data/catalog.json` (data, not code). `hermesd catalog refresh` writes an overlay
with the real file names, sizes and sha256 read from the hub; `load_catalog` applies it on top of
the packaged data, so a newer hermesd with more variants is never shadowed by an old refresh.
Weight sizes are either known (exact bytes, or a publisher's rounded figure) or estimated from the
architecture and the quant's bits per weight; every consumer can tell which (`size_kind`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from hermesd.models.gguf_split import shard_name, unsplit_name

log = logging.getLogger(__name__)

SizeKind = Literal["exact", "published", "estimated"]
SIZE_KINDS: tuple[str, ...] = ("exact", "published", "estimated")

# Quant names as they appear in GGUF file names, longest first so Q4_K_M wins over Q4_K.
_QUANT_RE = re.compile(
    r"(?:^|[-._/])(IQ\d_[A-Z]+|Q\d_K_[SML]|Q\d_K|Q\d_\d|BF16|F16|F32)(?=[-./]|$)",
    re.IGNORECASE,
)


class CatalogError(ValueError):
    """The catalog data (packaged or refreshed) is malformed; the message names the field."""


@dataclass(frozen=True)
class QuantType:
    name: str
    rank: int
    # Average bits per weight of the repeating layers, and of the two big non-repeating tensors
    # (llama.cpp's K-quant mixes keep `output.weight` at Q6_K).
    layer_bpw: float
    token_embd_bpw: float
    output_bpw: float
    note: str = ""


@dataclass(frozen=True)
class CatalogFile:
    path: str
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class QuantEntry:
    quant: str
    repo: str
    files: tuple[CatalogFile, ...]
    size_kind: SizeKind
    size_bytes: int | None = None
    names_verified: bool = False
    revision: str | None = None
    note: str = ""

    def known_size(self) -> int | None:
        """Total bytes when the catalog knows them (exactly or as published), else None."""
        if self.files and all(f.size is not None for f in self.files):
            return sum(f.size or 0 for f in self.files)
        return self.size_bytes

    def file_ids(self) -> tuple[str, ...]:
        """`repo/path` of every file, as in `hermesd plan --json`; a glob when the names are unknown."""
        if not self.files:
            return (f"{self.repo}/*{self.quant}*.gguf",)
        return tuple(f"{self.repo}/{f.path}" for f in self.files)


@dataclass(frozen=True)
class Variant:
    id: str
    name: str
    arch: str
    size_rank: int
    layers: int
    hidden_size: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    context_max: int
    tied_embeddings: bool
    quants: tuple[QuantEntry, ...]
    base_model: str = ""
    released: str = ""
    prompt_format: str = ""
    source: str = ""
    draft: str = ""  # the id of the catalog's draft model for this variant ("" for none)
    # The Hugging Face safetensors repository of this variant (`hermesd tune`'s QLoRA base), and
    # how firm that id is ("" for a draft model, which is never trained on).
    hf_repo: str = ""
    hf_repo_note: str = ""

    def quant(self, name: str) -> QuantEntry | None:
        for q in self.quants:
            if q.quant.upper() == name.upper():
                return q
        return None

    def layer_params(self) -> int:
        """Weights in one transformer block: attention projections, the gated FFN, two norms."""
        q_width = self.heads * self.head_dim
        kv_width = self.kv_heads * self.head_dim
        attention = self.hidden_size * q_width * 2 + self.hidden_size * kv_width * 2
        ffn = 3 * self.hidden_size * self.intermediate_size
        return attention + ffn + 2 * self.hidden_size

    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    def total_params(self) -> int:
        outputs = 0 if self.tied_embeddings else self.embedding_params()
        return self.layers * self.layer_params() + self.embedding_params() + outputs


@dataclass(frozen=True)
class WeightLayout:
    """Where the bytes of a model's weights are: per repeating layer, and the rest.

    llama.cpp keeps `token_embd` on the CPU always; `output` goes to the GPU only when every
    layer does. `source` says where the numbers came from ("gguf", or the catalog's size_kind).
    """

    layer_bytes: tuple[int, ...]
    token_embd_bytes: int
    output_bytes: int
    other_bytes: int
    source: str

    @property
    def total(self) -> int:
        return sum(self.layer_bytes) + self.token_embd_bytes + self.output_bytes + self.other_bytes

    @property
    def estimated(self) -> bool:
        return self.source == "estimated"


@dataclass(frozen=True)
class Catalog:
    variants: tuple[Variant, ...]
    quant_types: Mapping[str, QuantType]
    overlay_path: Path | None = None
    refreshed_at: str | None = None
    by_id: Mapping[str, Variant] = field(default_factory=dict, compare=False, repr=False)
    # small models for speculative decoding, described like variants (one quant each)
    drafts: Mapping[str, Variant] = field(default_factory=dict)

    def variant(self, ref: str) -> Variant | None:
        return self.by_id.get(normalize_variant(ref, self))

    def variant_of_file(self, name: str, arch: str, layers: int | None) -> Variant | None:
        """The variant a GGUF file is: by its file name in the catalog, else by architecture and
        layer count (a file the user quantized and named themselves)."""
        for v in self.variants:
            if any(Path(f.path).name == name for q in v.quants for f in q.files):
                return v
        matches = [v for v in self.variants if v.arch == arch and v.layers == layers]
        return matches[0] if len(matches) == 1 else None

    def ordered(self) -> tuple[Variant, ...]:
        """Largest first: the planner's default preference."""
        return tuple(sorted(self.variants, key=lambda v: -v.size_rank))

    def quant_type(self, name: str) -> QuantType | None:
        return self.quant_types.get(name.upper())

    def find_file(self, repo: str, path: str) -> tuple[Variant, QuantEntry] | None:
        """The catalog entry a hub file belongs to (used to label local files)."""
        for v in self.variants:
            for q in v.quants:
                if q.repo != repo:
                    continue
                if any(f.path == path for f in q.files) or (
                    not q.files and quant_from_filename(path) == q.quant.upper()
                ):
                    return v, q
        return None


# -- names


def normalize_variant(ref: str, catalog: Catalog) -> str:
    """`14b`, `Hermes-4-14B`, `hermes-4.3-36b`, `36b` -> the catalog id (unchanged when unknown)."""
    text = ref.strip().lower()
    if text in catalog.by_id:
        return text
    for v in catalog.variants:
        short = v.id.split("-")[-1]  # "14b", "36b", ...
        if text in (short, v.id.removeprefix("hermes-"), v.name.lower().replace(" ", "-")):
            return v.id
    return text


def parse_model_ref(ref: str, catalog: Catalog) -> tuple[str, str | None]:
    """`VARIANT[:QUANT]` -> (variant id, quant or None). Raises CatalogError naming what is unknown."""
    name, _, quant = ref.partition(":")
    variant = catalog.variant(name)
    if variant is None:
        known = ", ".join(v.id for v in catalog.ordered())
        raise CatalogError(f"unknown variant {name!r}; known: {known}")
    if not quant:
        return variant.id, None
    entry = variant.quant(quant)
    if entry is None:
        known = ", ".join(q.quant for q in variant.quants)
        raise CatalogError(f"{variant.id} has no quant {quant!r} in the catalog; known: {known}")
    return variant.id, entry.quant


def quant_from_filename(name: str) -> str | None:
    """The quant token of a GGUF file name (`...-Q4_K_M-00001-of-00002.gguf` -> `Q4_K_M`)."""
    base = unsplit_name(name)
    matches = _QUANT_RE.findall(base)
    return matches[-1].upper() if matches else None


# -- weight sizes


def weight_layout(variant: Variant, entry: QuantEntry, qtype: QuantType) -> WeightLayout:
    """Per-layer bytes from the catalog: a known total split by the quant's tensor mix, or an
    estimate from bits per weight when the size is unknown."""
    embd_bytes = math.ceil(variant.embedding_params() * qtype.token_embd_bpw / 8)
    out_params = variant.embedding_params()
    out_bpw = qtype.token_embd_bpw if variant.tied_embeddings else qtype.output_bpw
    out_bytes = math.ceil(out_params * out_bpw / 8)
    total = entry.known_size()
    if total is None:
        per_layer = math.ceil(variant.layer_params() * qtype.layer_bpw / 8)
        return WeightLayout((per_layer,) * variant.layers, embd_bytes, out_bytes, 0, "estimated")
    # A known total: whatever is not embeddings is spread evenly over the layers.
    rest = max(total - embd_bytes - out_bytes, 0)
    per_layer, remainder = divmod(rest, variant.layers)
    return WeightLayout((per_layer,) * variant.layers, embd_bytes, out_bytes, remainder, entry.size_kind)


# -- loading


def packaged_catalog_path() -> Path:
    return Path(str(resources.files("hermesd.models").joinpath("data/catalog.json")))


def default_overlay_path() -> Path:
    """Where `hermesd catalog refresh` writes: $HERMESD_CATALOG_OVERLAY, else under XDG_DATA_HOME."""
    env = os.environ.get("HERMESD_CATALOG_OVERLAY")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "hermesd" / "catalog-overlay.json"


def load_catalog(path: Path | None = None, overlay: Path | None = None) -> Catalog:
    """The packaged catalog (or `path`), with the refresh overlay applied when it exists."""
    source = path or packaged_catalog_path()
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CatalogError(f"{source}: cannot read the catalog: {exc}") from exc
    catalog = catalog_from_dict(data, str(source))
    overlay_file = overlay if overlay is not None else default_overlay_path()
    if overlay_file.is_file():
        refreshed_at, entries = read_overlay(overlay_file)
        catalog = apply_overlay(catalog, entries, overlay_file, refreshed_at)
    return catalog


def catalog_from_dict(data: Mapping[str, Any], where: str = "catalog") -> Catalog:
    qtypes = {}
    for name, raw in _get(data, "quant_types", dict, where).items():
        at = f"{where}: quant_types.{name}"
        qtypes[name.upper()] = QuantType(
            name=name.upper(),
            rank=int(_get(raw, "rank", int, at)),
            layer_bpw=float(_get(raw, "layer_bpw", (int, float), at)),
            token_embd_bpw=float(_get(raw, "token_embd_bpw", (int, float), at)),
            output_bpw=float(_get(raw, "output_bpw", (int, float), at)),
            note=str(raw.get("note", "")),
        )
    variants = []
    for i, raw in enumerate(_get(data, "variants", list, where)):
        variants.append(_variant(raw, qtypes, f"{where}: variants[{i}]"))
    by_id = {v.id: v for v in variants}
    if len(by_id) != len(variants):
        raise CatalogError(f"{where}: duplicate variant ids")
    drafts = {}
    for i, raw in enumerate(data.get("drafts", [])):
        draft = _variant(raw, qtypes, f"{where}: drafts[{i}]")
        if len(draft.quants) != 1:
            raise CatalogError(f"{where}: drafts[{i}].quants: a draft model has exactly one quant")
        drafts[draft.id] = draft
    for v in variants:
        if v.draft and v.draft not in drafts:
            raise CatalogError(f"{where}: variant {v.id} names draft {v.draft!r}, which is not in drafts")
    return Catalog(variants=tuple(variants), quant_types=qtypes, by_id=by_id, drafts=drafts)


def _variant(raw: Mapping[str, Any], qtypes: Mapping[str, QuantType], at: str) -> Variant:
    ints = {
        k: int(_get(raw, k, int, at))
        for k in (
            "size_rank",
            "layers",
            "hidden_size",
            "heads",
            "kv_heads",
            "head_dim",
            "intermediate_size",
            "vocab_size",
            "context_max",
        )
    }
    for key, value in ints.items():
        if value <= 0:
            raise CatalogError(f"{at}.{key}: must be positive, got {value}")
    quants = tuple(
        _quant(q, qtypes, f"{at}.quants[{j}]") for j, q in enumerate(_get(raw, "quants", list, at))
    )
    return Variant(
        id=str(_get(raw, "id", str, at)),
        name=str(_get(raw, "name", str, at)),
        arch=str(_get(raw, "arch", str, at)),
        tied_embeddings=bool(raw.get("tied_embeddings", False)),
        quants=quants,
        base_model=str(raw.get("base_model", "")),
        released=str(raw.get("released", "")),
        prompt_format=str(raw.get("prompt_format", "")),
        source=str(raw.get("source", "")),
        draft=str(raw.get("draft", "")),
        hf_repo=str(raw.get("hf_repo", "")),
        hf_repo_note=str(raw.get("hf_repo_note", "")),
        **ints,
    )


def _quant(raw: Mapping[str, Any], qtypes: Mapping[str, QuantType], at: str) -> QuantEntry:
    quant = str(_get(raw, "quant", str, at)).upper()
    if quant not in qtypes:
        raise CatalogError(f"{at}.quant: {quant!r} is not in quant_types")
    files = [
        CatalogFile(
            path=str(_get(f, "path", str, f"{at}.files[{k}]")),
            size=f.get("size"),
            sha256=f.get("sha256"),
        )
        for k, f in enumerate(raw.get("files", []))
    ]
    split = raw.get("split")
    if split is not None:
        prefix, count = str(_get(split, "prefix", str, at)), int(_get(split, "count", int, at))
        files = [CatalogFile(shard_name(prefix, i, count)) for i in range(1, count + 1)]
    size_kind = raw.get("size_kind", "estimated")
    if size_kind not in SIZE_KINDS:
        raise CatalogError(f"{at}.size_kind: expected one of {SIZE_KINDS}, got {size_kind!r}")
    size_bytes = raw.get("size_bytes")
    if size_bytes is not None and (not isinstance(size_bytes, int) or size_bytes <= 0):
        raise CatalogError(f"{at}.size_bytes: expected a positive integer, got {size_bytes!r}")
    entry = QuantEntry(
        quant=quant,
        repo=str(_get(raw, "repo", str, at)),
        files=tuple(files),
        size_kind=size_kind,
        size_bytes=size_bytes,
        names_verified=bool(raw.get("names_verified", False)),
        revision=raw.get("revision"),
        note=str(raw.get("note", "")),
    )
    if entry.size_kind != "estimated" and entry.known_size() is None:
        raise CatalogError(f"{at}: size_kind is {size_kind!r} but no size is given")
    return entry


def _get(raw: Any, key: str, kind: type | tuple[type, ...], at: str) -> Any:
    if not isinstance(raw, Mapping):
        raise CatalogError(f"{at}: expected an object")
    if key not in raw:
        raise CatalogError(f"{at}.{key}: missing")
    value = raw[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise CatalogError(f"{at}.{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


# -- refresh overlay


@dataclass(frozen=True)
class OverlayEntry:
    variant: str
    quant: str
    repo: str
    revision: str
    files: tuple[CatalogFile, ...]


def overlay_from_listing(
    catalog: Catalog, repo: str, revision: str, listing: Iterable[CatalogFile]
) -> list[OverlayEntry]:
    """Match a repo's file listing (from the hub) to the catalog's quants of that repo."""
    by_quant: dict[str, list[CatalogFile]] = {}
    for f in listing:
        if not f.path.lower().endswith(".gguf") or "mmproj" in f.path.lower():
            continue
        token = quant_from_filename(f.path)
        if token is not None:
            by_quant.setdefault(token, []).append(f)
    out = []
    for v in catalog.variants:
        for q in v.quants:
            if q.repo != repo:
                continue
            found = sorted(by_quant.get(q.quant.upper(), []), key=lambda f: f.path)
            if not found:
                log.warning("%s %s: no %s file in %s at %s", v.id, q.quant, q.quant, repo, revision)
                continue
            out.append(OverlayEntry(v.id, q.quant, repo, revision, tuple(found)))
    return out


def read_overlay(path: Path) -> tuple[str | None, list[OverlayEntry]]:
    """(refreshed_at, entries) of an overlay file written by `write_overlay`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data.get("refreshed_at"), [
            OverlayEntry(
                variant=e["variant"],
                quant=e["quant"],
                repo=e["repo"],
                revision=e["revision"],
                files=tuple(CatalogFile(f["path"], f.get("size"), f.get("sha256")) for f in e["files"]),
            )
            for e in data["entries"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CatalogError(f"{path}: cannot read the catalog overlay ({exc}); delete it or refresh") from exc


def write_overlay(path: Path, entries: Iterable[OverlayEntry], refreshed_at: str) -> None:
    data = {
        "refreshed_at": refreshed_at,
        "entries": [
            {
                "variant": e.variant,
                "quant": e.quant,
                "repo": e.repo,
                "revision": e.revision,
                "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in e.files],
            }
            for e in entries
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def apply_overlay(
    catalog: Catalog,
    entries: Iterable[OverlayEntry],
    where: Path | None = None,
    refreshed_at: str | None = None,
) -> Catalog:
    """Replace the files of matching (variant, quant, repo) entries by what the hub listed."""
    table = {(e.variant, e.quant.upper(), e.repo): e for e in entries}
    variants = []
    for v in catalog.variants:
        quants = []
        for q in v.quants:
            e = table.get((v.id, q.quant.upper(), q.repo))
            if e is not None and e.files:
                exact = all(f.size is not None for f in e.files)
                q = replace(  # the refreshed entry replaces the packaged one
                    q,
                    files=e.files,
                    revision=e.revision,
                    names_verified=True,
                    size_kind="exact" if exact else q.size_kind,
                )
            quants.append(q)
        variants.append(replace(v, quants=tuple(quants)))
    return Catalog(
        variants=tuple(variants),
        quant_types=catalog.quant_types,
        overlay_path=where,
        refreshed_at=refreshed_at,
        by_id={v.id: v for v in variants},
        drafts=catalog.drafts,
    )
