"""Where training runs and how the base weights are held there: the method of a run.

- `qlora-nf4` (the default with a CUDA GPU, on Hugging Face safetensors): every linear layer in 4-bit
  NF4 with double quantization (bitsandbytes), compute in bf16 (fp16 on GPUs without bf16), gradient
  checkpointing, LoRA weights in fp32. Asked for with `--method qlora-nf4` on a machine without a
  GPU, it runs on bitsandbytes' CPU backend (slow: for tests and tiny models).
- `lora-bf16` (a CUDA GPU, a GGUF base): transformers cannot load a GGUF in 4 bits, so the GGUF is
  dequantized to bf16 and trained with gradient checkpointing.
- `lora-fp32` (the CPU): every weight in fp32; fine for small models and for the tests.
The choice is a pure function of what is available (`choose_method`), used by the run and by the
plan `tune` checks first, so both always mean the same method; tests simulate a GPU machine.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from hermesd.runtime.tune.base import TuneError
from hermesd.runtime.tune.plan import METHODS, Method, default_method

log = logging.getLogger(__name__)

DeviceChoice = Literal["auto", "cpu", "cuda"]
MethodChoice = Literal["auto", "qlora-nf4", "lora-bf16", "lora-fp32"]
METHOD_CHOICES: tuple[str, ...] = ("auto", *METHODS)
BNB_INSTALL = "pip install 'hermesd[tune-cuda]' (bitsandbytes)"


@dataclass(frozen=True)
class Accelerators:
    cuda: bool
    bitsandbytes: bool
    bf16: bool
    gpu_name: str = ""


@dataclass(frozen=True)
class DevicePlan:
    device: Literal["cpu", "cuda"]
    method: Method
    compute_dtype: Literal["float32", "bfloat16", "float16"]
    gradient_checkpointing: bool
    reason: str
    # from_pretrained's device_map: {"": "cpu"}, {"": 0}, or module -> GPU when the model is split
    device_map: dict[str, int | str] = field(default_factory=dict)


def detect_accelerators() -> Accelerators:
    import torch

    cuda = bool(torch.cuda.is_available())
    return Accelerators(
        cuda=cuda,
        bitsandbytes=importlib.util.find_spec("bitsandbytes") is not None,
        bf16=bool(cuda and torch.cuda.is_bf16_supported()),
        gpu_name=torch.cuda.get_device_name(0) if cuda else "",
    )


def choose_method(
    want_device: DeviceChoice, want_method: MethodChoice, *, cuda: bool, bitsandbytes: bool, hf_base: bool
) -> Method:
    """The method of a run; TuneError, in one line, for a combination that cannot work here."""
    if want_device == "cuda" and not cuda:
        raise TuneError("--device cuda: no CUDA device is available to torch on this machine")
    gpu = cuda and want_device != "cpu"
    method: Method = default_method(gpu, hf_base) if want_method == "auto" else want_method
    if method == "qlora-nf4":
        if not hf_base:
            raise TuneError(
                "--method qlora-nf4 loads Hugging Face safetensors in 4 bits, and transformers cannot "
                "load a GGUF that way: pass the model's repo or folder as --base (the served GGUF as "
                "--base-gguf), or use --method lora-bf16 (GPU) / lora-fp32 (CPU)"
            )
        if not bitsandbytes:
            raise TuneError(
                f"4-bit QLoRA needs bitsandbytes: {BNB_INSTALL}, or train with --method lora-fp32"
            )
    if method == "lora-bf16" and not gpu:
        raise TuneError("--method lora-bf16 trains on a CUDA GPU and none is usable here; use lora-fp32")
    return method


def choose_device(
    want: DeviceChoice,
    acc: Accelerators,
    *,
    method: MethodChoice = "auto",
    hf_base: bool = False,
    split: Sequence[tuple[int, int]] = (),
) -> DevicePlan:
    """The device plan of a run. `split` is the training plan's (GPU index, layers) per GPU: one
    entry for the GPU it chose, several when it spreads the model; empty means GPU 0."""
    chosen = choose_method(want, method, cuda=acc.cuda, bitsandbytes=acc.bitsandbytes, hf_base=hf_base)
    gpu = acc.cuda and want != "cpu" and chosen != "lora-fp32"
    if not gpu:
        if chosen == "qlora-nf4":
            return DevicePlan(
                "cpu",
                chosen,
                "bfloat16",
                True,
                "CPU, 4-bit NF4 QLoRA on bitsandbytes' CPU backend (slow: for tests and tiny models)",
                {"": "cpu"},
            )
        why = "asked for" if want == "cpu" or method == "lora-fp32" else "no CUDA device available"
        return DevicePlan("cpu", "lora-fp32", "float32", False, f"CPU, full-precision LoRA ({why})")
    dtype: Literal["bfloat16", "float16"] = "bfloat16" if acc.bf16 else "float16"
    on = f" on {acc.gpu_name}" if acc.gpu_name else ""
    held = "4-bit NF4 QLoRA" if chosen == "qlora-nf4" else "the GGUF dequantized to " + dtype
    where = f"{len(split)} GPUs" if len(split) > 1 else "CUDA" + on
    return DevicePlan(
        "cuda",
        chosen,
        dtype,
        True,
        f"{where}: {held}, {dtype} compute, gradient checkpointing",
        dict(gpu_device_map(split)) if len(split) > 1 else {"": split[0][0] if split else 0},
    )


def gpu_device_map(split: Sequence[tuple[int, int]]) -> dict[str, int]:
    """Module -> GPU for a decoder spread over GPUs as the training plan split it: the token
    embedding (and the output layer, which may be tied to it) on the first; layers in order, as many
    on each GPU as the plan gave it; the final norm and the output layer on the last. Module names are
    those of transformers' Llama, Qwen 3 and Seed-OSS models."""
    if not split:
        return {"": 0}
    first, last = split[0][0], split[-1][0]
    out: dict[str, int] = {"model.embed_tokens": first, "model.rotary_emb": first}
    layer = 0
    for index, count in split:
        for _ in range(count):
            out[f"model.layers.{layer}"] = index
            layer += 1
    out["model.norm"] = last
    out["lm_head"] = last
    return out


def load_kwargs(plan: DevicePlan) -> dict[str, Any]:
    """from_pretrained keyword arguments for the plan."""
    import torch

    dtype = getattr(torch, plan.compute_dtype)
    if plan.method == "lora-fp32":
        return {"dtype": dtype}
    out: dict[str, Any] = {"dtype": dtype, "device_map": plan.device_map or {"": 0}}
    if plan.method == "qlora-nf4":
        from transformers import BitsAndBytesConfig

        # bitsandbytes' CPU backend logs, at import, that an optional kernels package is missing:
        # nothing a user of hermesd can act on
        logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

        out["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    return out


def prepare_for_training(model: Any, plan: DevicePlan) -> Any:
    """Make a loaded base ready for a LoRA: freeze it; for QLoRA cast norms and turn on gradient
    checkpointing (peft's `prepare_model_for_kbit_training`); for bf16 turn it on directly."""
    if plan.method == "qlora-nf4":
        from peft import prepare_model_for_kbit_training

        if plan.device == "cpu":
            _keep_cpu_4bit_trainable(model)
        with warnings.catch_warnings():
            # transformers' own deprecation notes (gradient_checkpointing_enable), raised inside peft
            warnings.simplefilter("ignore", FutureWarning)
            return prepare_model_for_kbit_training(
                model,
                use_gradient_checkpointing=plan.gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False},
            )
    for p in model.parameters():
        p.requires_grad_(False)
    if plan.gradient_checkpointing:
        # the frozen embedding's output needs a gradient, or no gradient reaches the checkpointed
        # layers' LoRA weights
        model.enable_input_require_grads()
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _keep_cpu_4bit_trainable(model: Any) -> None:
    """bitsandbytes 0.50, on a CPU with AVX512-BF16, repacks a `Linear4bit`'s weight for inference at
    its first forward in eval mode (our eval loss before training) and keeps it so: every later
    forward, in training too, goes through `gemv_4bit`, which has no autograd kernel, so no gradient
    reaches the layers below and the LoRA learns little (seen: loss 6.9 -> 1.65 where the same run
    unpacked reaches well under 0.5). Turning the repacking off keeps the trainable path."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
