"""Does training this base fit this machine? One pure estimate, explained, used by `tune --plan`
(human and --json), by the check `tune` runs before it loads anything, and in the run folder.

Methods, and how each holds the base weights:
- `qlora-nf4` (a CUDA GPU, the Hugging Face safetensors): every linear layer in 4-bit NF4 with double
  quantization (about 4.127 bits a weight: 4 bits, an 8-bit scale per 64 weights, an fp32 scale per
  256 scales); peft's `prepare_model_for_kbit_training` then up-casts every other weight (the token
  embedding, the output layer, the norms) to fp32.
- `lora-bf16` (a CUDA GPU, a dequantized GGUF): every weight in bf16.
- `lora-fp32` (the CPU): every weight in fp32 (14B: about 59 GB).
Then: the LoRA's parameters with their gradients and AdamW's two moments (16 bytes each, fp32);
activations (with gradient checkpointing, on the GPU methods: each layer's input, plus one layer's
activations recomputed in the backward pass; without it, on the CPU: every layer's); the logits and
their fp32 up-cast and gradient (vocabulary x tokens; with a chunked loss only one chunk's); and a
fixed overhead per GPU (CUDA context, allocator slack, bitsandbytes' buffers) and for the process.
Attention is assumed memory-efficient (flash or SDPA kernels: no tokens x tokens matrix).

A model too big for one GPU is spread over the GPUs by free memory: the token embedding on the first,
the output layer and the logits on the last, the layers in proportion to the room left on each (as
accelerate's `device_map` would, and as the serving planner splits layers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from hermesd.runtime.tune.config import DEFAULT_TARGETS

GIB = 1024**3
Method = Literal["qlora-nf4", "lora-bf16", "lora-fp32"]
METHODS: tuple[Method, ...] = ("qlora-nf4", "lora-bf16", "lora-fp32")
NF4_BYTES_PER_WEIGHT = (4 + 8 / 64 + 32 / (64 * 256)) / 8
LORA_BYTES_PER_PARAM = 16  # fp32 weight, fp32 gradient, AdamW's two fp32 moments
GPU_OVERHEAD = int(1.0 * GIB)  # CUDA context, allocator slack, bitsandbytes workspaces
PROCESS_RAM = int(2.0 * GIB)  # python, torch, transformers, the tokenizer, the data
LOAD_BUFFER = 5 * 10**9  # a GPU load streams one safetensors shard (5 GB at most) through RAM
LOSS_CHUNK = 1024  # tokens per chunk of a chunked loss
SEQ_STEP = 256  # --max-seq-len suggestions are multiples of this
MIN_SUGGESTED_SEQ = 512
LABELS = {
    "qlora-nf4": "4-bit QLoRA (NF4)",
    "lora-bf16": "bf16 LoRA",
    "lora-fp32": "full-precision LoRA",
}


@dataclass(frozen=True)
class ModelShape:
    n_params: int  # every weight (of every part of a split GGUF)
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    q_width: int  # heads * head_dim
    kv_width: int  # kv_heads * head_dim
    tied_embeddings: bool = False

    def lora_params(self, rank: int, targets: Sequence[str]) -> int:
        return self.lora_params_per_layer(rank, targets) * self.layers

    def lora_params_per_layer(self, rank: int, targets: Sequence[str]) -> int:
        shapes = {
            "q_proj": (self.hidden, self.q_width),
            "k_proj": (self.hidden, self.kv_width),
            "v_proj": (self.hidden, self.kv_width),
            "o_proj": (self.q_width, self.hidden),
            "gate_proj": (self.hidden, self.intermediate),
            "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }
        return sum(rank * (i + o) for name, (i, o) in shapes.items() if name in targets)

    @property
    def embedding_params(self) -> int:
        """The token embedding and the output layer (one matrix when tied)."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def layer_params(self) -> int:
        return max(0, self.n_params - self.embedding_params) // max(1, self.layers)

    def activation_elements(self) -> int:
        """Values one block keeps per token for the backward pass, as autograd's saved tensors of a
        qwen3 block with a LoRA (dropout on) on every projection were counted (torch 2.13, SDPA):
        - hidden-wide: the two residual inputs of the norms, and for each of q, k, v, gate and up
          the LoRA dropout's output and its mask (on the CPU a full-width float, not a bit), 12;
        - q-wide: q before its norm, q after the rotary embedding, the attention output, o's
          dropout output and mask, 5 (llama has no q norm: 4);
        - kv-wide: k before its norm, k after the rotary embedding, v, 3 (llama: 2);
        - intermediate-wide: gate, up, the activation, down's dropout output and mask, 5.
        The frozen base projections keep nothing (their inputs' gradients need only the weights),
        and the LoRA's own rank-wide values are left out (rank x 7, next to thousands). One count
        for every architecture: llama's is 3 % less at 70B. On a GPU the dropout mask is a byte, an
        over-count only in the one layer recomputed there. With it the CPU plan is within 2 % of the
        peak RSS of real runs (tests/engine/test_tune_plan_measured.py); the former count (8h + 3q
        + 2kv + 5i, the masks left out) was 20 % short of the activations measured."""
        h, i = self.hidden, self.intermediate
        return 12 * h + 5 * self.q_width + 3 * self.kv_width + 5 * i


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    free_bytes: int


@dataclass(frozen=True)
class Machine:
    gpus: tuple[Gpu, ...]
    ram_bytes: int  # available RAM
    cuda_usable: bool = True  # torch can drive the GPUs (False: a CPU-only torch)
    name: str = ""


@dataclass(frozen=True)
class PlanRequest:
    rank: int = 16
    targets: tuple[str, ...] = DEFAULT_TARGETS
    batch: int = 1
    seq_len: int = 2048
    method: Method | None = None  # None: qlora-nf4 on CUDA for a Hugging Face base, else the device's
    hf_base: bool = True  # the base is Hugging Face safetensors (not a dequantized GGUF)
    chunked_loss: bool = True  # train.py computes the loss LOSS_CHUNK tokens at a time
    tokens_per_epoch: int | None = None  # the training data's tokens
    tokens_per_s: float | None = None  # a measured or stated training throughput


@dataclass(frozen=True)
class DeviceUse:
    index: int
    name: str
    bytes: int
    free_bytes: int
    layers: int


@dataclass(frozen=True)
class Alternative:
    """Another base to suggest when this one does not fit (a smaller catalog variant)."""

    name: str
    base: str
    shape: ModelShape


@dataclass(frozen=True)
class TrainingPlan:
    fits: bool
    method: Method
    base: str
    gguf: str | None
    max_seq_len: int
    batch: int
    devices: tuple[DeviceUse, ...]
    ram_bytes: int
    ram_free_bytes: int
    parts: tuple[tuple[str, int], ...]
    seconds_per_epoch: float | None
    tokens_per_epoch: int | None
    logits_bytes: int
    logits_chunked_bytes: int
    reason: str | None = None
    suggestions: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "fits": self.fits,
            "method": self.method,
            "base": self.base,
            "gguf": self.gguf,
            "max_seq_len": self.max_seq_len,
            "batch_size": self.batch,
            "devices": [
                {
                    "index": d.index,
                    "name": d.name,
                    "bytes": d.bytes,
                    "free_bytes": d.free_bytes,
                    "layers": d.layers,
                }
                for d in self.devices
            ],
            "ram_bytes": self.ram_bytes,
            "ram_free_bytes": self.ram_free_bytes,
            "parts": dict(self.parts),
            "logits_bytes": self.logits_bytes,
            "logits_chunked_bytes": self.logits_chunked_bytes,
            "tokens_per_epoch": self.tokens_per_epoch,
            "seconds_per_epoch": self.seconds_per_epoch,
            "suggestions": list(self.suggestions),
            "notes": list(self.notes),
        }
        if not self.fits:
            out["reason"] = self.reason
        return out

    def lines(self) -> list[str]:
        verdict = "fits" if self.fits else "does NOT fit"
        where = ", ".join(f"GPU {d.index} {gib(d.bytes)} of {gib(d.free_bytes)}" for d in self.devices)
        out = [
            f"{LABELS[self.method]} ({self.method}) on {self.base}"
            + (f", adapter for {self.gguf}" if self.gguf else "")
            + f": {verdict}",
            f"  --max-seq-len {self.max_seq_len}, --batch-size {self.batch}",
        ]
        if self.devices:
            out.append(f"  GPU memory: {where}")
            if len(self.devices) > 1:
                out.append(
                    "  layers per GPU: " + ", ".join(f"GPU {d.index}: {d.layers}" for d in self.devices)
                )
        out.append(f"  RAM: {gib(self.ram_bytes)} of {gib(self.ram_free_bytes)} available")
        out += [f"    {label}: {gib(n)}" for label, n in self.parts]
        if self.tokens_per_epoch is not None:
            time = "unknown (no measured throughput)"
            if self.seconds_per_epoch is not None:
                time = duration(self.seconds_per_epoch)
            out.append(f"  one epoch: {self.tokens_per_epoch:,} tokens, {time}")
        if self.reason:
            out.append(f"  {self.reason}")
        out += [f"  would fit: {s}" for s in self.suggestions]
        out += [f"  note: {n}" for n in self.notes]
        return out


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def default_method(gpu: bool, hf_base: bool) -> Method:
    """The method when none is asked for: 4 bits on a GPU for Hugging Face weights (transformers
    cannot load a GGUF in 4 bits: bf16 for that), full precision without a GPU. The one rule, for
    the plan and for the run (device.choose_method, which also checks what this machine can do)."""
    if gpu:
        return "qlora-nf4" if hf_base else "lora-bf16"
    return "lora-fp32"


def choose_method(machine: Machine, request: PlanRequest) -> Method:
    if request.method is not None:
        return request.method
    return default_method(bool(machine.gpus) and machine.cuda_usable, request.hf_base)


@dataclass(frozen=True)
class _Costs:
    """Bytes by where they live: per layer, on the first GPU, on the last, on every GPU, in RAM."""

    per_layer: int
    first: int  # the token embedding
    last: int  # the output layer (when not tied), the final norm, the logits
    each_gpu: int  # overhead and one recomputed layer
    parts: tuple[tuple[str, int], ...]
    logits: int
    logits_chunked: int


def _costs(shape: ModelShape, method: Method, r: PlanRequest) -> _Costs:
    tokens = r.batch * r.seq_len
    compute = 4 if method == "lora-fp32" else 2
    checkpointing = method != "lora-fp32"
    if method == "qlora-nf4":
        layer_w = int(shape.layer_params * NF4_BYTES_PER_WEIGHT)
        embed_bytes = 4  # up-cast to fp32 by peft
    else:
        layer_w = shape.layer_params * compute
        embed_bytes = compute
    matrix = shape.vocab * shape.hidden * embed_bytes
    lora = shape.lora_params_per_layer(r.rank, r.targets) * LORA_BYTES_PER_PARAM
    one_layer = tokens * shape.activation_elements() * compute
    kept = tokens * shape.hidden * compute if checkpointing else one_layer
    per_logit = compute + 8  # the logits, their fp32 up-cast / log-softmax, and their gradient
    logits = tokens * shape.vocab * per_logit
    chunked = min(tokens, LOSS_CHUNK) * shape.vocab * per_logit
    loss = chunked if r.chunked_loss else logits
    head = 0 if shape.tied_embeddings else matrix
    recompute = one_layer if checkpointing else 0
    weights = layer_w * shape.layers
    weights_label = {
        "qlora-nf4": "base linear layers (NF4)",
        "lora-bf16": "base weights (bf16)",
        "lora-fp32": "base weights (fp32)",
    }[method]
    embed_label = "embeddings + output layer" + (" (fp32 up-cast)" if method == "qlora-nf4" else "")
    parts = (
        (weights_label, weights),
        (embed_label, matrix + head),
        ("LoRA weights + gradients + AdamW", lora * shape.layers),
        ("activations" + (" (checkpointed)" if checkpointing else ""), kept * shape.layers + recompute),
        ("logits" + (" (chunked loss)" if r.chunked_loss else ""), loss),
    )
    return _Costs(
        layer_w + lora + kept, matrix, head + loss, GPU_OVERHEAD + recompute, parts, logits, chunked
    )


def plan_training(
    shape: ModelShape,
    machine: Machine,
    request: PlanRequest,
    *,
    base: str,
    gguf: str | None,
    alternatives: Sequence[Alternative] = (),
) -> TrainingPlan:
    method = choose_method(machine, request)
    plan = _place(shape, machine, request, method, base, gguf)
    notes = list(plan.notes)
    if method != "lora-fp32" and not machine.cuda_usable:
        notes.append("torch cannot drive a CUDA GPU here (a CPU-only torch?)")
    on_cpu = method == "lora-fp32" or not (machine.gpus and machine.cuda_usable)
    if on_cpu and shape.n_params > 3_000_000_000:
        notes.append(
            f"on a CPU a model of {shape.n_params / 1e9:.0f}B parameters trains for days: use a CUDA GPU"
        )
    if plan.fits:
        return replace(plan, notes=tuple(notes))
    suggestions = _suggestions(shape, machine, request, method, base, gguf, alternatives)
    return replace(plan, suggestions=tuple(suggestions), notes=tuple(notes))


def _place(
    shape: ModelShape, machine: Machine, r: PlanRequest, method: Method, base: str, gguf: str | None
) -> TrainingPlan:
    costs = _costs(shape, method, r)
    total = sum(n for _, n in costs.parts)
    tokens = r.tokens_per_epoch
    seconds = tokens / r.tokens_per_s if tokens is not None and r.tokens_per_s else None
    common: dict[str, Any] = dict(
        method=method,
        base=base,
        gguf=gguf,
        max_seq_len=r.seq_len,
        batch=r.batch,
        seconds_per_epoch=seconds,
        tokens_per_epoch=tokens,
        logits_bytes=costs.logits,
        logits_chunked_bytes=costs.logits_chunked,
    )
    # on the CPU: full precision, or 4 bits when asked for (bitsandbytes' CPU backend)
    if method == "lora-fp32" or (method == "qlora-nf4" and not (machine.gpus and machine.cuda_usable)):
        ram = total + PROCESS_RAM
        parts = (*costs.parts, ("process (python, torch, data)", PROCESS_RAM))
        fits = ram <= machine.ram_bytes
        reason = None if fits else f"needs {gib(ram)} of RAM, {gib(machine.ram_bytes)} available"
        return TrainingPlan(
            fits,
            devices=(),
            ram_bytes=ram,
            ram_free_bytes=machine.ram_bytes,
            parts=parts,
            reason=reason,
            **common,
        )
    ram = PROCESS_RAM + LOAD_BUFFER
    parts = (*costs.parts, ("CUDA overhead per GPU", GPU_OVERHEAD))
    if not machine.gpus:
        return TrainingPlan(
            False,
            devices=(),
            ram_bytes=ram,
            ram_free_bytes=machine.ram_bytes,
            parts=parts,
            reason=f"{method} needs a CUDA GPU and this machine has none",
            **common,
        )
    devices, over = split_over_gpus(shape.layers, costs, machine.gpus)
    fits = over is None and ram <= machine.ram_bytes
    reason = None
    if over is not None:
        reason = over
    elif ram > machine.ram_bytes:
        reason = f"needs {gib(ram)} of RAM to load, {gib(machine.ram_bytes)} available"
    return TrainingPlan(
        fits,
        devices=devices,
        ram_bytes=ram,
        ram_free_bytes=machine.ram_bytes,
        parts=parts,
        reason=reason,
        **common,
    )


def split_over_gpus(
    layers: int, costs: _Costs, gpus: Sequence[Gpu]
) -> tuple[tuple[DeviceUse, ...], str | None]:
    """The GPU with the most free memory when the model fits it; else all GPUs, the layers split in
    proportion to the room each has left. With the reason when even that does not fit."""
    best = min(gpus, key=lambda g: (-g.free_bytes, g.index))
    for chosen in ([best], sorted(gpus, key=lambda g: g.index)):
        k = len(chosen)
        fixed = [
            costs.each_gpu + (costs.first if j == 0 else 0) + (costs.last if j == k - 1 else 0)
            for j in range(k)
        ]
        room = [max(0, g.free_bytes - f) for g, f in zip(chosen, fixed, strict=True)]
        counts = _proportional(layers, room)
        uses = tuple(
            DeviceUse(g.index, g.name, f + n * costs.per_layer, g.free_bytes, n)
            for g, f, n in zip(chosen, fixed, counts, strict=True)
        )
        if all(u.bytes <= u.free_bytes for u in uses):
            return uses, None
        if k == len(gpus):
            break
    short = max(uses, key=lambda u: u.bytes - u.free_bytes)
    need, free, n = sum(u.bytes for u in uses), sum(u.free_bytes for u in uses), len(uses)
    return uses, (
        f"needs {gib(need)} of GPU memory over {n} GPU{'s' if n > 1 else ''}, {gib(free)} free "
        f"(GPU {short.index} needs {gib(short.bytes)}, has {gib(short.free_bytes)})"
    )


def _proportional(layers: int, room: Sequence[int]) -> list[int]:
    total = sum(room)
    if total <= 0:
        return [layers] + [0] * (len(room) - 1) if room else []
    exact = [layers * r / total for r in room]
    counts = [math.floor(x) for x in exact]
    by_fraction = sorted(range(len(room)), key=lambda j: -(exact[j] - counts[j]))
    for j in by_fraction[: layers - sum(counts)]:
        counts[j] += 1
    return counts


def _suggestions(
    shape: ModelShape,
    machine: Machine,
    r: PlanRequest,
    method: Method,
    base: str,
    gguf: str | None,
    alternatives: Sequence[Alternative],
) -> list[str]:
    out: list[str] = []

    def fits(s: ModelShape = shape, req: PlanRequest = r, m: Machine = machine) -> bool:
        return _place(s, m, req, choose_method(m, req), base, gguf).fits

    if r.batch > 1 and fits(req=replace(r, batch=1)):
        out.append(f"--batch-size 1 --grad-accum {r.batch} (the same effective batch)")
    seq = (r.seq_len - 1) // SEQ_STEP * SEQ_STEP
    while seq >= MIN_SUGGESTED_SEQ:
        if fits(req=replace(r, seq_len=seq, batch=1)):
            out.append(f"--max-seq-len {seq}" + (" --batch-size 1" if r.batch > 1 else ""))
            break
        seq -= SEQ_STEP
    for alt in alternatives:
        if alt.shape.n_params < shape.n_params and fits(s=alt.shape):
            out.append(f"a smaller model: {alt.name} ({alt.base})")
            break
    if method != "lora-fp32" and machine.gpus:
        biggest = max(machine.gpus, key=lambda g: g.free_bytes)
        for k in range(len(machine.gpus) + 1, 65):
            more = replace(machine, gpus=tuple(Gpu(i, biggest.name, biggest.free_bytes) for i in range(k)))
            if fits(m=more):
                out.append(f"{k} GPUs like GPU {biggest.index} ({gib(biggest.free_bytes)} free each)")
                break
    if method == "lora-fp32":
        gpu_need = _single_gpu_need(shape, r)
        out.append(f"a CUDA GPU with {gib(gpu_need)} free: 4-bit QLoRA on the Hugging Face weights")
        ram = _place(shape, machine, r, method, base, gguf).ram_bytes
        out.append(f"{gib(ram)} of available RAM (full-precision LoRA on the CPU)")
    return out


def _single_gpu_need(shape: ModelShape, r: PlanRequest) -> int:
    costs = _costs(shape, "qlora-nf4", replace(r, method="qlora-nf4"))
    return costs.each_gpu + costs.first + costs.last + costs.per_layer * shape.layers


def longest_seq_len(shape: ModelShape, machine: Machine, request: PlanRequest, *, upto: int) -> int | None:
    """The longest --max-seq-len (a multiple of SEQ_STEP, at most `upto`) whose plan fits, or None
    when not even SEQ_STEP tokens do. Memory grows with the length, so a bisection finds it."""

    def fits(steps: int) -> bool:
        r = replace(request, seq_len=steps * SEQ_STEP)
        return _place(shape, machine, r, choose_method(machine, r), "", None).fits

    lo, hi = 1, max(1, upto // SEQ_STEP)
    if not fits(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo * SEQ_STEP
