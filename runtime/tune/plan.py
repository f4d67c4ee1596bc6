"""Does training this base fit this machine? A pure estimate, explained.

On a CUDA GPU hermesd trains QLoRA: the base's linear layers in 4-bit NF4 with double quantization
(about 4.13 bits a weight), embeddings and the output layer in bf16, gradient checkpointing. On the
CPU it trains full-precision LoRA. The estimate adds: base weights, the LoRA's weights, gradients and
AdamW states (16 bytes a trained parameter), activations (with checkpointing only each layer's input
is kept, plus one layer recomputed), the logits and their gradient, and a fixed runtime overhead.

For reference, the figures the project started from: 14B QLoRA in 12-16 GB, 70B in 40-48 GB, 405B
needs several GPUs (hermesd tune trains on one device; it says so rather than trying).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GIB = 1024**3
NF4_BYTES_PER_WEIGHT = 4.13 / 8
CUDA_OVERHEAD = int(1.0 * GIB)  # CUDA context, allocator slack, bitsandbytes workspaces
CPU_OVERHEAD = int(1.0 * GIB)  # python, torch, the tokenizer, the data
SEED_FIGURES = "reference: 14B QLoRA needs about 12-16 GB, 70B 40-48 GB, 405B several GPUs"


@dataclass(frozen=True)
class ModelShape:
    n_params: int
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    q_width: int  # heads * head_dim
    kv_width: int  # kv_heads * head_dim
    tied_embeddings: bool = False

    def lora_params(self, rank: int, targets: tuple[str, ...]) -> int:
        shapes = {
            "q_proj": (self.hidden, self.q_width),
            "k_proj": (self.hidden, self.kv_width),
            "v_proj": (self.hidden, self.kv_width),
            "o_proj": (self.q_width, self.hidden),
            "gate_proj": (self.hidden, self.intermediate),
            "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }
        per_layer = sum(rank * (i + o) for name, (i, o) in shapes.items() if name in targets)
        return per_layer * self.layers

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)


@dataclass(frozen=True)
class Device:
    kind: Literal["cuda", "cpu"]
    name: str
    memory_bytes: int  # free GPU memory, or available RAM


@dataclass(frozen=True)
class TrainingPlan:
    fits: bool
    method: str
    device: Device
    need_bytes: int
    parts: tuple[tuple[str, int], ...]
    reasons: tuple[str, ...]

    def lines(self) -> list[str]:
        verdict = "fits" if self.fits else "does NOT fit"
        out = [
            f"{self.method} on {self.device.name}: needs about {gib(self.need_bytes)}, "
            f"has {gib(self.device.memory_bytes)}: {verdict}"
        ]
        out += [f"  {label}: {gib(n)}" for label, n in self.parts]
        out += [f"  {r}" for r in self.reasons]
        out.append(f"  ({SEED_FIGURES})")
        return out


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def estimate(
    shape: ModelShape, *, method: str, rank: int, targets: tuple[str, ...], batch: int, seq_len: int
) -> list[tuple[str, int]]:
    tokens = batch * seq_len
    lora = shape.lora_params(rank, targets)
    body = max(0, shape.n_params - shape.embedding_params)
    if method == "qlora":
        weights = int(body * NF4_BYTES_PER_WEIGHT + shape.embedding_params * 2)
        act_bytes = 2  # bf16
        kept = tokens * shape.hidden * act_bytes * shape.layers  # checkpointed layer inputs
        overhead = CUDA_OVERHEAD
    else:
        weights = shape.n_params * 4
        act_bytes = 4
        # no checkpointing: every layer keeps its attention and MLP activations for the backward pass
        kept = tokens * (10 * shape.hidden + 3 * shape.intermediate) * act_bytes * shape.layers
        overhead = CPU_OVERHEAD
    one_layer = tokens * (10 * shape.hidden + 3 * shape.intermediate) * act_bytes
    logits = tokens * shape.vocab * (act_bytes + 4)  # logits, then their float32 gradient
    return [
        ("base weights", weights),
        ("LoRA weights + gradients + AdamW", lora * 16),
        ("activations", kept + (one_layer if method == "qlora" else 0)),
        ("logits", logits),
        ("runtime overhead", overhead),
    ]


def plan_training(
    shape: ModelShape,
    devices: list[Device],
    *,
    rank: int,
    targets: tuple[str, ...],
    batch: int,
    seq_len: int,
    cuda_usable: bool = True,
) -> TrainingPlan:
    """The plan on the best device: the GPU with the most free memory (QLoRA), else the CPU."""
    gpus = sorted((d for d in devices if d.kind == "cuda"), key=lambda d: -d.memory_bytes)
    cpu = next((d for d in devices if d.kind == "cpu"), Device("cpu", "CPU", 0))
    reasons: list[str] = []
    if gpus and cuda_usable:
        device, method = gpus[0], "qlora"
    else:
        device, method = cpu, "lora"
        if gpus:
            reasons.append(
                "a GPU is present but torch cannot use it (a CPU-only torch?): planning for the CPU"
            )
    parts = estimate(shape, method=method, rank=rank, targets=targets, batch=batch, seq_len=seq_len)
    need = sum(n for _, n in parts)
    fits = need <= device.memory_bytes
    label = "4-bit QLoRA" if method == "qlora" else "full-precision LoRA"
    if method == "qlora" and not fits:
        weights_alone = parts[0][1]
        if weights_alone > device.memory_bytes or (len(gpus) > 1 and need > device.memory_bytes):
            reasons.append(
                "the 4-bit base alone does not fit one GPU; training across several GPUs (FSDP+QLoRA) is "
                "needed, which hermesd tune does not do"
            )
        elif batch > 1:
            reasons.append(f"try --batch-size 1 --grad-accum {batch} (same effective batch, less memory)")
        else:
            reasons.append("try a shorter --max-seq-len or a smaller --rank")
    if method == "lora":
        gpu_need = sum(
            n
            for _, n in estimate(
                shape, method="qlora", rank=rank, targets=targets, batch=batch, seq_len=seq_len
            )
        )
        reasons.append(f"on one CUDA GPU, 4-bit QLoRA would need about {gib(gpu_need)} of GPU memory")
    if method == "lora" and shape.n_params > 3_000_000_000:
        hours = "days" if shape.n_params > 10_000_000_000 else "many hours"
        reasons.append(
            f"on a CPU a model of {shape.n_params / 1e9:.0f}B parameters trains for {hours}: use a GPU"
        )
    return TrainingPlan(fits, label, device, need, tuple(parts), tuple(reasons))
