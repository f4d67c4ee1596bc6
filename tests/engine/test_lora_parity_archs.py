"""Every architecture Hermes 4 uses, proven by parity: a LoRA trained a few steps on a tiny random
model of each (qwen3, seed_oss, llama with Llama 3.1's `rope_type: llama3`), written by hermesd's
GGUF LoRA writer and loaded by llama.cpp on the GGUF of the same weights, gives the logits the peft
model gives, at positions well past llama3's original context; and the tune path's GGUF loader
keeps that scaling (it used to drop it) or, for seed_oss, which it cannot read, says what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hermesd.models.gguf_lora import write_lora_gguf
from hermesd.models.pairing import first_difference, gguf_facts, hf_facts
from tests.fixtures import random_hf_models as rhm
from tests.fixtures.lora_runner import LoraRunner
from tests.fixtures.random_hf_models import KINDS, ORIGINAL_CONTEXT, Kind

# Same weights, two implementations (llama.cpp's f32 CPU kernels with an f16 KV cache, torch in
# f32): measured at most 0.003 on these models (logits spread ~1.2), for every kind and position.
# A dropped llama3 scaling moves them by >1 and the adapter by >2, so 0.02 leaves room for other
# CPUs' kernels and still tells right from wrong.
LOGIT_TOLERANCE = 0.02
# (length, seed): prompts reaching 4-6x past the llama3 kind's original context of 32 tokens
PROMPTS = ((128, 1), (192, 2))
# positions where only the scaling makes the two agree: past twice the original context
LONG = 2 * ORIGINAL_CONTEXT


@dataclass
class Trained:
    kind: Kind
    model: Any  # the peft model
    gguf: Path
    adapter: Path
    adapter_names: list[str]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Kind], Trained]]:
    """Build, train and export one kind on first use; the module shares them."""
    from hermesd.runtime.tune.export import lora_state

    built: dict[Kind, Trained] = {}

    def get(kind: Kind) -> Trained:
        if kind not in built:
            folder = tmp_path_factory.mktemp(f"parity-{kind}")
            model = rhm.random_model(kind)
            gguf = rhm.write_gguf(model, kind, folder / "model.gguf")  # before the LoRA goes on
            peft_model = rhm.train_lora(model)
            adapter = folder / "adapter.gguf"
            names = write_lora_gguf(
                adapter,
                arch=rhm.GGUF_ARCH[kind],
                config=peft_model.config,
                lora_state=lora_state(peft_model),
                alpha=rhm.LORA_ALPHA,
                rank=rhm.LORA_RANK,
                base_fingerprint=None,
            )
            built[kind] = Trained(kind, peft_model, gguf, adapter, names)
        return built[kind]

    yield get


def _cpp_logits(trained: Trained, ids: list[int], *, adapter: bool = True) -> np.ndarray:
    with LoraRunner(trained.gguf, trained.adapter if adapter else None, n_ctx=256) as runner:
        return runner.logits(ids)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_llama_cpp_with_the_adapter_computes_what_the_peft_model_computes(
    trained: Callable[[Kind], Trained], kind: Kind
) -> None:
    t = trained(kind)
    for length, seed in PROMPTS:
        ids = rhm.prompt(length, seed=seed)
        cpp = _cpp_logits(t, ids)
        assert np.abs(cpp - rhm.logits(t.model, ids)).max() < LOGIT_TOLERANCE, (kind, length)
    # the trained adapter is not the identity: without it llama.cpp computes something else
    assert np.abs(cpp - _cpp_logits(t, ids, adapter=False)).max() > 50 * LOGIT_TOLERANCE


@pytest.mark.parametrize("kind", KINDS)
def test_every_projection_of_every_layer_is_in_the_adapter(
    trained: Callable[[Kind], Trained], kind: Kind
) -> None:
    modules = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    expected = {f"blk.{b}.{m}.weight.lora_{ab}" for b in range(2) for m in modules for ab in "ab"}
    assert set(trained(kind).adapter_names) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_the_gguf_pairs_with_its_hugging_face_config(trained: Callable[[Kind], Trained], kind: Kind) -> None:
    t = trained(kind)
    assert first_difference(gguf_facts(t.gguf), hf_facts(t.model.config.to_dict(), None)) is None


@pytest.mark.slow
def test_llama_cpp_applies_the_llama3_scaling_past_the_original_context(
    trained: Callable[[Kind], Trained],
) -> None:
    """The parity above would hold with the scaling dropped on both sides; this shows it is there:
    the same weights and adapter without `rope_scaling` compute measurably other logits."""
    from hermesd.runtime.tune.export import lora_state

    t = trained("llama3")
    unscaled = rhm.load_lora(rhm.random_model("llama3", rope_scaling=False), lora_state(t.model))
    ids = rhm.prompt(PROMPTS[0][0], seed=PROMPTS[0][1])
    cpp = _cpp_logits(t, ids)[LONG:]
    assert np.abs(cpp - rhm.logits(t.model, ids)[LONG:]).max() < LOGIT_TOLERANCE
    assert np.abs(cpp - rhm.logits(unscaled, ids)[LONG:]).max() > 50 * LOGIT_TOLERANCE
    facts = gguf_facts(t.gguf)
    assert facts.rope_scaling == "llama3"
    difference = first_difference(facts, hf_facts(unscaled.config.to_dict(), None))
    assert difference == "RoPE scaling differs (GGUF llama3, Hugging Face none)"


@pytest.mark.slow
def test_the_gguf_base_path_keeps_the_llama3_scaling(trained: Callable[[Kind], Trained]) -> None:
    """`hermesd tune --base FILE.gguf` of a Llama 3.1 GGUF: transformers' loader reads no
    `rope_freqs`, so load_hf_model sets the llama3 parameters that reproduce them."""
    import torch

    from hermesd.runtime.tune.base import load_hf_model, resolve_base

    t = trained("llama3")
    model = load_hf_model(resolve_base(str(t.gguf)), {"dtype": torch.float32})
    assert model.config.rope_parameters == rhm.LLAMA3_ROPE
    ids = rhm.prompt(PROMPTS[1][0], seed=PROMPTS[1][1])
    got = rhm.logits(model, ids)[LONG:]
    assert np.abs(got - _cpp_logits(t, ids, adapter=False)[LONG:]).max() < LOGIT_TOLERANCE


def test_a_seed_oss_gguf_base_is_refused_naming_the_hugging_face_route(
    trained: Callable[[Kind], Trained], tmp_path: Path
) -> None:
    """Refused when the run checks its base (before the plan and any loading), naming the catalog's
    repo when the file is a catalog variant (here by its file name)."""
    import torch

    from hermesd.runtime.tune.base import TuneError, load_hf_model, model_architecture, resolve_base

    served = tmp_path / "Hermes-4.3-36B-Q4_K_M.gguf"
    served.symlink_to(trained("seed_oss").gguf)
    for check in (model_architecture, lambda spec: load_hf_model(spec, {"dtype": torch.float32})):
        with pytest.raises(TuneError) as err:
            check(resolve_base(str(served)))
        message = str(err.value)
        assert "\n" not in message
        assert f"--base NousResearch/Hermes-4.3-36B --base-gguf {served}" in message
        assert "transformers cannot read seed_oss weights from a GGUF" in message
    unknown = trained("seed_oss").gguf  # a file the catalog does not know
    with pytest.raises(TuneError, match="--base <its Hugging Face repo> --base-gguf"):
        model_architecture(resolve_base(str(unknown)))
