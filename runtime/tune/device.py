"""Where training runs and how the base weights are held there.

- CUDA with bitsandbytes: QLoRA — base weights in 4-bit NF4 (double quantization), compute in bf16
  (fp16 on GPUs without bf16), gradient checkpointing, LoRA weights in full precision.
- CPU: full-precision (float32) LoRA; fine for small models and for the tests.
The choice is a pure function of what is available, so tests simulate a GPU machine.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any, Literal

from hermesd.runtime.tune.base import TuneError

log = logging.getLogger(__name__)

DeviceChoice = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class DevicePlan:
    device: Literal["cpu", "cuda"]
    method: Literal["lora", "qlora"]
    compute_dtype: Literal["float32", "bfloat16", "float16"]
    gradient_checkpointing: bool
    reason: str


@dataclass(frozen=True)
class Accelerators:
    cuda: bool
    bitsandbytes: bool
    bf16: bool
    gpu_name: str = ""


def detect_accelerators() -> Accelerators:
    import torch

    cuda = bool(torch.cuda.is_available())
    return Accelerators(
        cuda=cuda,
        bitsandbytes=importlib.util.find_spec("bitsandbytes") is not None,
        bf16=bool(cuda and torch.cuda.is_bf16_supported()),
        gpu_name=torch.cuda.get_device_name(0) if cuda else "",
    )


def choose_device(want: DeviceChoice, acc: Accelerators) -> DevicePlan:
    if want == "cuda" and not acc.cuda:
        raise TuneError("--device cuda: no CUDA device is available to torch on this machine")
    if want == "cpu" or not acc.cuda:
        why = "asked for with --device cpu" if want == "cpu" else "no CUDA device available"
        return DevicePlan("cpu", "lora", "float32", False, f"CPU, full-precision LoRA ({why})")
    if not acc.bitsandbytes:
        raise TuneError(
            "training on CUDA uses 4-bit QLoRA, which needs bitsandbytes: pip install bitsandbytes "
            "(or train on the CPU with --device cpu)"
        )
    dtype: Literal["bfloat16", "float16"] = "bfloat16" if acc.bf16 else "float16"
    gpu = f" on {acc.gpu_name}" if acc.gpu_name else ""
    return DevicePlan(
        "cuda", "qlora", dtype, True, f"CUDA{gpu}: 4-bit NF4 QLoRA, {dtype} compute, gradient checkpointing"
    )


def load_kwargs(plan: DevicePlan) -> dict[str, Any]:
    """from_pretrained keyword arguments for the plan."""
    import torch

    dtype = getattr(torch, plan.compute_dtype)
    if plan.method == "lora":
        return {"dtype": dtype}
    from transformers import BitsAndBytesConfig

    return {
        "dtype": dtype,
        "device_map": {"": 0},
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        ),
    }


def prepare_for_training(model: Any, plan: DevicePlan) -> Any:
    """Make a loaded base ready for a LoRA: freeze it, and for QLoRA cast norms and turn on
    gradient checkpointing (peft's `prepare_model_for_kbit_training`)."""
    if plan.method == "qlora":
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=plan.gradient_checkpointing)
    for p in model.parameters():
        p.requires_grad_(False)
    if plan.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model
