"""The fit planner: which Hermes 4 variant and quant this machine should run, and how.

`plan(hardware, catalog, request)` is a pure function: no GPU, file or socket. For every candidate
(variant x quant) it places the layers (runtime/placement.py) with the requested context, then
chooses by policy:

- Automatic choices use Q4_K_M or better; Q3_K_M and Q2_K are considered only when nothing at
  Q4_K_M or better fits (an explicit --quant is always honoured).
- `quality` (default): the largest variant that runs *usably* — entirely on the GPUs, or split
  with an estimated decode speed of at least `min_tok_s` (10 tok/s: Hermes reasons in thousands of
  tokens, so a 2 tok/s split is not a useful default). Within that variant, a quant that fits
  entirely on the GPUs beats a better quant that spills into RAM ("prefer full GPU offload");
  among those, the best quant. If nothing is usable (typical of CPU-only machines), the fastest
  candidate wins.
- `speed`: full GPU offload first (of the largest variant that has one), never a CPU split when a
  full-offload option exists; without any, the fastest candidate.
- Variants rank by size: 405B > 70B > 4.3-36B > 14B. Hermes 4.3-36B is newer (Dec 2025) than
  the others (Aug 2025) but smaller than 70B; ask for it with --variant hermes-4.3-36b.
- The context defaults to 16384 tokens; only when nothing fits there does the planner try 8192,
  then 4096 (never below). An explicit --ctx is never changed.
- `min_ctx` (serve --min-ctx; an agent wants 65536) is a floor: the context is never planned below
  it, nor beyond a variant's trained context (variants trained for less are skipped). To reach it
  the planner gives up, in order: slots (the model is chosen for one), the KV cache type (each of
  `kv_fallback`, e.g. q8_0, when nothing fits at Q4_K_M or better with `kv_type`), then
  quantization (a quant below Q4_K_M) before it refuses.
- Sequence slots (parallel streams): the model is chosen for one; then, unless --parallel is given,
  the plan takes the most slots, up to 4 (llama-server's and Ollama's default), whose KV cache still
  fits beside the chosen model without moving a layer off the GPUs. A 16k context for one stream of
  thinking is worth more than three more streams, so slots never shrink the context or the quant.
- Other hosts (llama.cpp RPC workers, `Hardware.workers`): the network is the slowest link, so a
  candidate uses workers only when this host alone cannot hold it, and then the fewest that make it
  fit, largest first (free memory of all its devices). Within the chosen variant, fewer hosts come
  before a better quant. Layers go in whole runs per device in llama.cpp's order (workers' devices,
  then local GPUs: runtime/placement.py); `engine_split` gives the engine that order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from hermesd.models.catalog import Catalog, QuantEntry, Variant, WeightLayout, weight_layout
from hermesd.runtime.engine.context_settings import ContextSettings, kv_type_problem
from hermesd.runtime.hardware import Hardware, Worker
from hermesd.runtime.memory import GIB, MIB, draft_model_bytes, gib
from hermesd.runtime.placement import NETWORK_GBPS, NETWORK_RTT_S, Budget, Placement, place

Prefer = Literal["quality", "speed"]
DEFAULT_CTX = 16384
MIN_CTX = 4096
FALLBACK_CTX = (16384, 8192, 4096)
AUTO_FLOOR_QUANT = "Q4_K_M"
MAX_AUTO_SLOTS = 4


class PlanError(ValueError):
    """The request itself is wrong (unknown variant, quant, KV type...); the message says which."""


@dataclass(frozen=True)
class PlanRequest:
    variant: str | None = None
    quant: str | None = None
    ctx: int | None = None  # None: 16384, lowered to 8192/4096 only when nothing fits
    min_ctx: int | None = None  # never plan fewer tokens per sequence (module doc)
    kv_fallback: tuple[str, ...] = ()  # KV types tried after kv_type before a smaller quant
    parallel: int | None = None  # None: the most slots, up to MAX_AUTO_SLOTS, that fit (module doc)
    kv_type: str = "f16"
    prefer: Prefer = "quality"
    flash_attn: bool = True
    batch_size: int = 512
    min_tok_s: float = 10.0
    # CUDA context, cuBLAS workspace and allocator slack of our process on each GPU used
    # (~300-400 MiB in llama.cpp runs) on top of the profile's free memory.
    gpu_margin_mib: int = 512
    # The daemon itself (Python, HTTP server) and headroom in RAM.
    cpu_margin_mib: int = 1024
    # Exact per-layer sizes of local GGUF files, keyed by (variant id, quant).
    local_layouts: Mapping[tuple[str, str], WeightLayout] = field(default_factory=dict)
    # Room for a draft model beside the model (serve --draft-model), or None.
    draft: DraftRequest | None = None


@dataclass(frozen=True)
class DraftRequest:
    """A draft model to plan room for: a local file's numbers (its architecture as a Variant, and
    its tensor sizes), or neither for the catalog's draft of each variant considered."""

    model: Variant | None = None
    layout: WeightLayout | None = None


@dataclass(frozen=True)
class DevicePlacement:
    device: Literal["gpu", "cpu"]
    index: int | None
    name: str
    layers: int
    bytes: int
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    margin_bytes: int
    capacity_bytes: int
    host: str | None = None  # None: this machine; else the worker's "HOST:PORT"
    holds_output: bool = False


@dataclass(frozen=True)
class Estimate:
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    margin_bytes: int
    tokens_per_s: float
    size_source: str  # "gguf" | "exact" | "published" | "estimated"
    # a draft model's weights, KV cache and compute buffer (inside the devices' margins)
    draft_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.margin_bytes


@dataclass(frozen=True)
class Plan:
    variant: str
    variant_name: str
    quant: str
    context: int
    parallel: int
    kv_type: str
    flash_attn: bool
    n_ubatch: int
    layers_total: int
    placement: tuple[DevicePlacement, ...]
    n_gpu_layers: int
    tensor_split: tuple[float, ...]
    full_offload: bool
    repo: str
    files: tuple[str, ...]
    estimate: Estimate
    arithmetic: tuple[str, ...]
    reasons: tuple[str, ...]
    prefer: Prefer
    hardware_source: str
    # llama.cpp RPC workers the plan uses, in registration order (see engine_split)
    workers: tuple[str, ...] = ()
    draft: str | None = None  # the draft model planned for (catalog id or file), if any

    @property
    def n_ctx(self) -> int:
        """llama.cpp's n_ctx: every parallel sequence gets `context` tokens."""
        return self.context * self.parallel

    @property
    def settings(self) -> ContextSettings:
        """The llama.cpp context serve runs for this plan (and `plan --verify` checks)."""
        return ContextSettings(
            ctx=self.context, parallel=self.parallel, kv_type=self.kv_type, flash_attn=self.flash_attn
        )


@dataclass(frozen=True)
class NoFit:
    reason: str
    missing_bytes: int
    arithmetic: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Candidate:
    variant: Variant
    entry: QuantEntry
    layout: WeightLayout
    rank: int
    context: int
    placement: Placement

    @property
    def usable_key(self) -> tuple[int, int, int]:
        return (self.variant.size_rank, -self.hosts, self.rank)

    @property
    def hosts(self) -> int:
        return 1 + len(self.placement.workers)


def plan(hardware: Hardware, catalog: Catalog, request: PlanRequest) -> Plan | NoFit:
    """Choose a variant, quant, context and device placement for this machine (see module doc)."""
    variants, quant = _validate(catalog, request)
    auto_slots = request.parallel is None
    request = replace(request, parallel=request.parallel or 1)
    floor = catalog.quant_types[AUTO_FLOOR_QUANT].rank
    contexts = _contexts(request)
    kv_types = tuple(dict.fromkeys((request.kv_type, *request.kv_fallback)))
    misses: list[_Candidate] = []
    for ctx in contexts:
        below_floor: tuple[list[_Candidate], PlanRequest] | None = None
        for kv in kv_types:
            at_kv = replace(request, kv_type=kv)
            fits: list[_Candidate] = []
            for v in variants:
                if ctx > v.context_max:
                    continue
                for entry in v.quants:
                    if quant is not None and entry.quant != quant:
                        continue
                    cand = _evaluate(v, entry, catalog, hardware, at_kv, ctx)
                    (fits if cand.placement.fits else misses).append(cand)
            if fits and (quant is not None or any(c.rank >= floor for c in fits)):
                return _finish(fits, misses, catalog, hardware, at_kv, floor, quant, auto_slots, kv_types[0])
            if fits and below_floor is None:
                below_floor = (fits, at_kv)  # a smaller quant: only when no KV type saves the floor
        if below_floor is not None:
            low_fits, at_kv = below_floor
            return _finish(low_fits, misses, catalog, hardware, at_kv, floor, quant, auto_slots, kv_types[0])
    return _no_fit(misses, variants, contexts, hardware, request)


def _contexts(request: PlanRequest) -> tuple[int, ...]:
    """The contexts per sequence to try, largest first (module doc)."""
    if request.ctx:
        return (request.ctx,)
    if request.min_ctx:
        larger = {c for c in FALLBACK_CTX if c > request.min_ctx}
        return tuple(sorted(larger | {request.min_ctx}, reverse=True))
    return FALLBACK_CTX


def _finish(
    fits: list[_Candidate],
    misses: list[_Candidate],
    catalog: Catalog,
    hardware: Hardware,
    request: PlanRequest,
    floor: int,
    quant: str | None,
    auto_slots: bool,
    original_kv: str,
) -> Plan:
    has_gpu = bool(hardware.gpus) or any(d.kind == "gpu" for w in hardware.workers for d in w.devices)
    chosen, why = _choose(fits, request, floor, explicit_quant=quant is not None, has_gpu=has_gpu)
    notes: list[str] = []
    if request.kv_fallback and request.kv_type != original_kv:
        notes.append(
            f"KV cache {request.kv_type}: at {original_kv} nothing at {AUTO_FLOOR_QUANT} or better fits "
            f"{chosen.context} tokens per sequence"
        )
    if auto_slots:
        chosen, request, slots = _add_slots(chosen, catalog, hardware, request)
        notes += slots
    return _build(chosen, why, fits, misses, catalog, hardware, request, notes)


def context_settings(req: PlanRequest, ctx: int) -> ContextSettings:
    """The llama.cpp context serve runs for this request at `ctx` tokens per sequence."""
    return ContextSettings(
        ctx=ctx,
        parallel=req.parallel or 1,
        kv_type=req.kv_type,
        flash_attn=req.flash_attn,
        batch_size=req.batch_size,
    )


def _validate(catalog: Catalog, request: PlanRequest) -> tuple[list[Variant], str | None]:
    problem = kv_type_problem(request.kv_type, request.flash_attn)
    if problem:
        raise PlanError(problem)
    if request.parallel is not None and request.parallel < 1:
        raise PlanError("parallel must be at least 1")
    if request.ctx is not None and request.ctx < 256:
        raise PlanError(f"context {request.ctx} is too small (at least 256 tokens; {MIN_CTX}+ is useful)")
    if request.min_ctx is not None and request.ctx is not None and request.ctx < request.min_ctx:
        raise PlanError(f"--ctx {request.ctx} is smaller than --min-ctx {request.min_ctx}")
    for problem in filter(None, (kv_type_problem(kv, request.flash_attn) for kv in request.kv_fallback)):
        raise PlanError(problem)
    if request.prefer not in ("quality", "speed"):
        raise PlanError(f"prefer must be 'quality' or 'speed', not {request.prefer!r}")
    if request.variant:
        v = catalog.variant(request.variant)
        if v is None:
            raise PlanError(
                f"unknown variant {request.variant!r}; known: {', '.join(x.id for x in catalog.ordered())}"
            )
        if request.ctx and request.ctx > v.context_max:
            raise PlanError(
                f"{v.id} was trained for at most {v.context_max} tokens; --ctx {request.ctx} is larger"
            )
        if request.min_ctx and request.min_ctx > v.context_max:
            raise PlanError(
                f"{v.id} was trained for at most {v.context_max} tokens; --min-ctx {request.min_ctx} "
                "is larger"
            )
        variants = [v]
    else:
        variants = list(catalog.ordered())
    quant = None
    if request.quant:
        quant = request.quant.upper()
        if not any(v.quant(quant) for v in variants):
            raise PlanError(f"no {quant} file in the catalog for {', '.join(v.id for v in variants)}")
    return variants, quant


def _evaluate(
    v: Variant, entry: QuantEntry, catalog: Catalog, hw: Hardware, req: PlanRequest, ctx: int
) -> _Candidate:
    qtype = catalog.quant_types[entry.quant]
    layout = req.local_layouts.get((v.id, entry.quant)) or weight_layout(v, entry, qtype)
    settings = context_settings(req, ctx)
    # a draft model goes where serve puts it: spread over this host's GPUs, else in RAM
    draft = _draft_bytes(v, catalog, req, settings)
    gpus = len(hw.gpus)
    budget = Budget(
        settings=settings,
        gpu_margin_bytes=req.gpu_margin_mib * MIB + (-(-draft // gpus) if gpus else 0),
        cpu_margin_bytes=req.cpu_margin_mib * MIB + (0 if gpus else draft),
    )
    return _Candidate(v, entry, layout, qtype.rank, ctx, _place_on_fewest_hosts(v, layout, hw, budget))


def _draft_bytes(v: Variant, catalog: Catalog, req: PlanRequest, settings: ContextSettings) -> int:
    if req.draft is None:
        return 0
    if req.draft.model is not None and req.draft.layout is not None:
        return draft_model_bytes(req.draft.model, req.draft.layout, settings)
    draft = catalog.drafts.get(v.draft)
    if draft is None:
        return 0
    entry = draft.quants[0]
    return draft_model_bytes(draft, weight_layout(draft, entry, catalog.quant_types[entry.quant]), settings)


def _place_on_fewest_hosts(v: Variant, layout: WeightLayout, hw: Hardware, budget: Budget) -> Placement:
    """This host alone if it holds the model; else the fewest workers, largest first, that make it
    fit (registration order kept among those chosen); else the closest miss."""
    alone = place(v, layout, replace(hw, workers=()), budget)
    if alone.fits or not hw.workers:
        return alone
    best = alone
    ranked = _largest_first(hw.workers)
    for k in range(1, len(ranked) + 1):
        chosen = set(ranked[:k])
        p = place(v, layout, replace(hw, workers=tuple(w for w in hw.workers if w in chosen)), budget)
        if p.fits:
            return p
        if p.missing_bytes < best.missing_bytes:
            best = p
    return best


def _largest_first(workers: Sequence[Worker]) -> list[Worker]:
    """Largest (free memory of all its devices) first; ties in registration order."""
    return sorted(workers, key=lambda w: -sum(d.memory_free_mib for d in w.devices))


def _choose(
    fits: Sequence[_Candidate], req: PlanRequest, floor: int, *, explicit_quant: bool, has_gpu: bool
) -> tuple[_Candidate, str]:
    pool = [c for c in fits if explicit_quant or c.rank >= floor] or list(fits)
    low = "" if pool[0].rank >= floor or explicit_quant else " (nothing at Q4_K_M or better fits)"
    fastest = max(pool, key=lambda c: (c.placement.tokens_per_s, c.rank))
    if req.prefer == "speed":
        full = [c for c in pool if c.placement.full_offload and has_gpu]
        if full:
            best = max(full, key=lambda c: c.usable_key)
            return best, f"speed: the largest variant and best quant that run entirely on the GPUs{low}"
        return fastest, f"speed: nothing fits entirely on the GPUs; the fastest option{low}"
    usable = [
        c for c in pool if (c.placement.full_offload and has_gpu) or c.placement.tokens_per_s >= req.min_tok_s
    ]
    if not usable:
        return fastest, (f"quality: no option reaches {req.min_tok_s:g} tok/s here, so the fastest one{low}")
    top = max(c.variant.size_rank for c in usable)
    same = [c for c in usable if c.variant.size_rank == top]
    fewest = min(c.hosts for c in same)
    same = [c for c in same if c.hosts == fewest]
    full = [c for c in same if c.placement.full_offload and has_gpu]
    if full:
        best = max(full, key=lambda c: c.rank)
        return best, (
            "quality: the largest variant that runs usably, at the best quant that fits entirely on the "
            f"GPUs{low}"
        )
    best = max(same, key=lambda c: c.rank)
    return best, (
        f"quality: the largest variant that runs usably (split at >= {req.min_tok_s:g} tok/s estimated), "
        f"best quant{low}"
    )


def _add_slots(
    c: _Candidate, catalog: Catalog, hw: Hardware, req: PlanRequest
) -> tuple[_Candidate, PlanRequest, list[str]]:
    """The most sequence slots, up to MAX_AUTO_SLOTS, that fit with the chosen model unchanged."""
    for n in range(MAX_AUTO_SLOTS, 1, -1):
        more = replace(req, parallel=n)
        cand = _evaluate(c.variant, c.entry, catalog, hw, more, c.context)
        p = cand.placement
        same_split = p.gpu_layers == c.placement.gpu_layers and p.workers == c.placement.workers
        if p.fits and same_split and p.full_offload == c.placement.full_offload:
            extra = p.kv_per_layer * c.variant.layers - c.placement.kv_per_layer * c.variant.layers
            return cand, more, [
                f"slots: {n} sequences decoded together, the most up to {MAX_AUTO_SLOTS} that fit beside "
                f"the model (their KV cache adds {gib(extra)}); --parallel sets another number"
            ]
    return c, req, [
        "slots: 1; a second sequence's KV cache would not fit without moving layers off the GPUs "
        "(a smaller --ctx leaves room for more; --parallel sets the number)"
    ]


# -- results


def _build(
    c: _Candidate,
    why: str,
    fits: Sequence[_Candidate],
    misses: Sequence[_Candidate],
    catalog: Catalog,
    hw: Hardware,
    req: PlanRequest,
    slots: Sequence[str] = (),
) -> Plan:
    p = c.placement
    devices = tuple(
        DevicePlacement(
            device="gpu" if d.device == "gpu" else "cpu",
            index=d.index,
            name=d.name,
            layers=d.layers,
            bytes=d.bytes,
            weights_bytes=d.weights_bytes,
            kv_bytes=d.kv_bytes,
            compute_bytes=d.compute_bytes,
            margin_bytes=d.margin_bytes,
            capacity_bytes=d.capacity_bytes,
            host=d.host,
            holds_output=d.holds_output,
        )
        for d in p.devices
    )
    estimate = Estimate(
        weights_bytes=sum(d.weights_bytes for d in p.devices),
        kv_bytes=sum(d.kv_bytes for d in p.devices),
        compute_bytes=sum(d.compute_bytes for d in p.devices),
        margin_bytes=sum(d.margin_bytes for d in p.devices),
        tokens_per_s=p.tokens_per_s,
        size_source=c.layout.source,
        draft_bytes=_draft_bytes(c.variant, catalog, req, context_settings(req, c.context)),
    )
    draft = _draft_name(c.variant, catalog, req)
    floor = catalog.quant_types[AUTO_FLOOR_QUANT].rank
    asked = " ".join(f"--{k} {v}" for k, v in (("variant", req.variant), ("quant", req.quant)) if v)
    if asked:
        why = f"{why} (limited by {asked})"
    reasons = [
        why,
        *_alternatives(c, fits, misses, req, floor),
        *_better_quant_hint(c, catalog, hw, replace(req, parallel=1) if slots else req),
        *slots,
    ]
    if draft is not None:
        reasons.append(
            f"draft model: {draft}, {gib(estimate.draft_bytes)} with its KV cache, kept free beside the model"
        )
    elif req.draft is not None:
        reasons.append(f"draft model: the catalog has none for {c.variant.name}; serve runs without one")
    return Plan(
        variant=c.variant.id,
        variant_name=c.variant.name,
        quant=c.entry.quant,
        context=c.context,
        parallel=req.parallel or 1,
        kv_type=req.kv_type,
        flash_attn=req.flash_attn,
        n_ubatch=context_settings(req, c.context).n_ubatch,
        layers_total=c.variant.layers,
        placement=devices,
        n_gpu_layers=p.n_gpu_layers,
        tensor_split=p.tensor_split(),
        full_offload=p.full_offload,
        repo=c.entry.repo,
        files=c.entry.file_ids(),
        estimate=estimate,
        arithmetic=tuple(_arithmetic(c, hw, req)),
        reasons=tuple(reasons),
        prefer=req.prefer,
        hardware_source=hw.source,
        workers=p.workers,
        draft=draft,
    )


def _draft_name(v: Variant, catalog: Catalog, req: PlanRequest) -> str | None:
    if req.draft is None:
        return None
    if req.draft.model is not None:
        return req.draft.model.name
    draft = catalog.drafts.get(v.draft)
    return draft.id if draft is not None else None


def _describe(c: _Candidate) -> str:
    p = c.placement
    if p.full_offload:
        where = "entirely on the GPUs"
    elif p.gpu_layers:
        where = f"{p.gpu_layers}/{c.variant.layers} layers on GPUs, the rest in RAM"
    else:
        where = "in RAM"
    if p.workers:
        where = f"across this host and {len(p.workers)} worker(s), {p.devices[-1].layers} layers in local RAM"
    if not p.fits:
        return f"{c.variant.id} even at {c.entry.quant}: does not fit ({gib(p.missing_bytes)} short)"
    return f"{c.variant.id} {c.entry.quant}: fits {where}, ~{_speed(p.tokens_per_s)}"


def _alternatives(
    chosen: _Candidate,
    fits: Sequence[_Candidate],
    misses: Sequence[_Candidate],
    req: PlanRequest,
    floor: int,
) -> list[str]:
    """One line per larger variant: why it was not chosen."""
    out = []
    for rank in sorted({c.variant.size_rank for c in [*fits, *misses]}, reverse=True):
        if rank <= chosen.variant.size_rank:
            continue
        same = [c for c in fits if c.variant.size_rank == rank and c.context == chosen.context]
        good = [c for c in same if c.rank >= floor or req.quant]
        if good:
            best = max(good, key=lambda c: (c.placement.tokens_per_s, c.rank))
            why = (
                "not entirely on the GPUs"
                if req.prefer == "speed"
                else f"below the {req.min_tok_s:g} tok/s usable speed"
            )
            out.append(f"not {_describe(best)}: {why}")
        elif same:
            best = max(same, key=lambda c: c.rank)
            out.append(f"not {_describe(best)}: automatic choices stay at {AUTO_FLOOR_QUANT} or better")
        else:
            missed = [c for c in misses if c.variant.size_rank == rank]
            out.append(f"not {_describe(min(missed, key=lambda c: c.placement.missing_bytes))}")
    return out


def _better_quant_hint(c: _Candidate, catalog: Catalog, hw: Hardware, req: PlanRequest) -> list[str]:
    """When a better quant of the chosen variant fits entirely on the GPUs at a smaller context."""
    if not c.placement.full_offload or req.quant:
        return []
    better = sorted(
        (q for q in c.variant.quants if catalog.quant_types[q.quant].rank > c.rank),
        key=lambda q: catalog.quant_types[q.quant].rank,
    )
    if not better:
        return []
    nxt = better[0]
    for ctx in range(c.context - 1024, MIN_CTX - 1, -1024):
        cand = _evaluate(c.variant, nxt, catalog, hw, req, ctx)
        if cand.placement.fits and cand.placement.full_offload:
            return [f"{nxt.quant} would fit entirely on the GPUs with --quant {nxt.quant} --ctx {ctx}"]
    return [f"{nxt.quant} does not fit entirely on the GPUs even at {MIN_CTX} tokens of context"]


def _speed(tok_s: float) -> str:
    return "unbounded" if tok_s == float("inf") else f"{tok_s:.1f} tok/s"


def _arithmetic(c: _Candidate, hw: Hardware, req: PlanRequest) -> list[str]:
    v, p, lay = c.variant, c.placement, c.layout
    source = {
        "gguf": "read from the local GGUF",
        "exact": "exact file size",
        "published": "published size, rounded",
        "estimated": "ESTIMATED from bits per weight",
    }.get(lay.source, lay.source)
    per_layer = sum(lay.layer_bytes) / max(len(lay.layer_bytes), 1)
    lines = [
        f"weights: {gib(lay.total)} ({source}) = {v.layers} layers x {per_layer / MIB:.0f} MiB"
        f" + token_embd {gib(lay.token_embd_bytes)} (always in RAM) + output {gib(lay.output_bytes)}",
        f"KV cache per layer: 2 (K,V) x {v.kv_heads} KV heads x {v.head_dim} head dim x {p.cells} cells"
        f" ({c.context} ctx x {req.parallel} seq) x {req.kv_type} = {p.kv_per_layer / MIB:.1f} MiB;"
        f" all {v.layers} layers: {gib(p.kv_per_layer * v.layers)}",
    ]
    for d in p.devices:
        label = device_label(d.device, d.index, d.name, d.host, d.capacity_bytes)
        if d.offload and d.layers == 0:
            lines.append(f"{label}: unused")
            continue
        parts = f"weights {gib(d.weights_bytes)} + KV {gib(d.kv_bytes)} + compute {gib(d.compute_bytes)}"
        ok = "fits" if d.bytes <= d.capacity_bytes else f"SHORT by {gib(d.bytes - d.capacity_bytes)}"
        extra = " + output layer" if d.holds_output and d.offload else ""
        total = f"{gib(d.bytes)} -> {ok}"
        lines.append(f"{label}: {d.layers} layers{extra}: {parts} + margin {gib(d.margin_bytes)} = {total}")
    not_read = lay.token_embd_bytes + lay.other_bytes  # only one embedding row is read per token
    reads = " + ".join(
        f"{(d.weights_bytes - (0 if d.offload else not_read)) / 1e9:.1f} GB"
        f" / {d.bandwidth_gbps:g} GB/s"
        for d in p.devices
        if d.layers or (not d.offload and not p.output_offloaded)
    )
    speed = _speed(p.tokens_per_s)
    if p.workers:
        hops = len(p.workers) + 1
        reads += f" + network {p.network_s * 1e3:.2f} ms"
        lines.append(
            f"network: {hops} host boundaries per token (this host -> {' -> '.join(p.workers)} -> this host),"
            f" each {NETWORK_RTT_S * 1e3:g} ms round trip + the activations ({v.hidden_size} x f32;"
            f" the logits, {v.vocab_size} x f32, when the output layer is on a worker)"
            f" at {NETWORK_GBPS:g} Gbit/s"
            " (assumed link; prompt processing not modelled)"
        )
    lines.append(f"decode speed bound (weights read per token / memory bandwidth): {reads} -> ~{speed}")
    if hw.source != "discovered":
        lines.append(f"hardware from {hw.source}")
    return lines


def _no_fit(
    misses: Sequence[_Candidate],
    variants: Sequence[Variant],
    contexts: Sequence[int],
    hw: Hardware,
    req: PlanRequest,
) -> NoFit:
    if not misses:
        return NoFit(
            reason=f"no candidate: the requested context ({contexts[0]}) exceeds every variant's limit",
            missing_bytes=0,
        )
    smallest = min(misses, key=lambda c: (c.placement.missing_bytes, -c.context))
    cpu = smallest.placement.devices[-1]
    gpu_layers = smallest.placement.gpu_layers
    gpus = f"with {gpu_layers} layers on the GPUs, " if hw.gpus else "with no GPU, "
    if smallest.placement.workers:
        used = len(smallest.placement.workers)
        gpus = f"with {gpu_layers} layers on {used} worker(s) and this host's GPUs, "
    elif hw.workers:
        gpus += "its workers unable to hold a layer, "
    asked = ", ".join(
        f"{k} {v}" for k, v in (("--variant", req.variant), ("--quant", req.quant), ("--ctx", req.ctx)) if v
    )
    restriction = f" for {asked}" if asked else ""
    others = f" and its {len(hw.workers)} worker(s)" if hw.workers else ""
    reason = (
        f"nothing fits this machine{others}{restriction}. The closest option, {smallest.variant.id} "
        f"{smallest.entry.quant} at {smallest.context} tokens of context, {gpus}"
        f"needs {gib(cpu.bytes)} of RAM "
        f"(weights {gib(cpu.weights_bytes)} + KV {gib(cpu.kv_bytes)} + compute {gib(cpu.compute_bytes)}"
        f" + margin {gib(cpu.margin_bytes)}) but {gib(cpu.capacity_bytes)} is available: "
        f"{smallest.placement.missing_bytes / GIB:.1f} GiB missing"
    )
    return NoFit(
        reason=reason,
        missing_bytes=smallest.placement.missing_bytes,
        arithmetic=tuple(_arithmetic(smallest, hw, req)),
    )


# -- JSON (shared/reference/hardware-profile.md)


def plan_to_json(result: Plan | NoFit) -> dict[str, Any]:
    if isinstance(result, NoFit):
        return {"fits": False, "reason": result.reason, "missing_bytes": result.missing_bytes}
    e = result.estimate
    return {
        "fits": True,
        "variant": result.variant,
        "quant": result.quant,
        "context": result.context,
        "parallel": result.parallel,
        "layers_total": result.layers_total,
        "placement": [
            {
                "device": d.device,
                "host": d.host or "local",
                **({"index": d.index} if d.device == "gpu" or d.host else {}),
                **({"name": d.name} if d.host else {}),
                "layers": d.layers,
                "bytes": d.bytes,
                "weights_bytes": d.weights_bytes,
                "kv_bytes": d.kv_bytes,
                "compute_bytes": d.compute_bytes,
                "margin_bytes": d.margin_bytes,
                "capacity_bytes": d.capacity_bytes,
            }
            for d in result.placement
        ],
        "files": list(result.files),
        "estimate": {
            "weights_bytes": e.weights_bytes,
            "kv_bytes": e.kv_bytes,
            "compute_bytes": e.compute_bytes,
            "margin_bytes": e.margin_bytes,
            "total_bytes": e.total_bytes,
            "tokens_per_s": None if e.tokens_per_s == float("inf") else round(e.tokens_per_s, 1),
            "size_source": e.size_source,
            "draft_bytes": e.draft_bytes,
        },
        "draft": result.draft,
        "n_gpu_layers": result.n_gpu_layers,
        "tensor_split": list(result.tensor_split),
        "workers": list(result.workers),
        "full_offload": result.full_offload,
        "n_ctx": result.n_ctx,
        "kv_type": result.kv_type,
        "flash_attn": result.flash_attn,
        "prefer": result.prefer,
        "reasons": list(result.reasons),
        "arithmetic": list(result.arithmetic),
    }


def device_label(device: str, index: int | None, name: str, host: str | None, capacity: int) -> str:
    """How the arithmetic names a device: "GPU 0 (name, 11.62 GiB free)", "RAM (... available)",
    "worker 10.0.0.2:50052 GPU 1 (name, ... free)"."""
    where = "" if host is None else f"worker {host} "
    if device == "gpu":
        return f"{where}GPU {index} ({name}, {gib(capacity)} free)"
    if host is None:
        return f"RAM ({gib(capacity)} available)"
    return f"{where}CPU device {index} (RAM, {gib(capacity)} available)"


# -- what llama.cpp needs to load a plan across hosts


@dataclass(frozen=True)
class EngineSplit:
    n_gpu_layers: int
    # one entry per device of llama.cpp's list: the workers' devices, then the local GPUs
    tensor_split: tuple[float, ...]
    workers: tuple[str, ...]  # register these RPC servers, exactly these, in this order


def engine_split(p: Plan, local_split: Sequence[float] | None = None) -> EngineSplit:
    """llama.cpp's n_gpu_layers, tensor_split and RPC servers for plan `p`.

    llama.cpp's default device list is the RPC devices first, in registration order (each worker's
    devices in the order it reports them), then the local GPUs; `tensor_split` has one entry per
    device of that list, in units (layers, the output layer counting one on the last device).
    Register exactly `workers`, in this order, before the model loads, and pass these two values.

    `local_split`: the local part remapped onto the engine's own GPU list (what
    `GpuAccess.tensor_split(planned)` returns for `planned` = the plan's local part,
    `p.tensor_split[len(remote devices):]`); without it the local part is the planner's, in the
    order of the hardware it planned on. Without workers this is `p.n_gpu_layers` and
    `p.tensor_split` unchanged (and `local_split`, when given).
    """
    remote = sum(1 for d in p.placement if d.host is not None)
    if not p.workers:
        split = tuple(local_split) if local_split is not None else p.tensor_split
        return EngineSplit(n_gpu_layers=p.n_gpu_layers, tensor_split=split, workers=())
    units = tuple(
        float(d.layers + (1 if d.holds_output else 0))
        for d in p.placement
        if d.host is not None or d.device == "gpu"
    )
    local = tuple(local_split) if local_split is not None else units[remote:]
    return EngineSplit(n_gpu_layers=p.n_gpu_layers, tensor_split=units[:remote] + local, workers=p.workers)
