"""The GGUF LoRA writer: llama.cpp loads what it writes and computes what the trained peft model
computes; the base identity is recorded and an adapter for another base is refused before llama.cpp."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hermesd.models.chat import ChatOptions, Message
from hermesd.models.gguf_lora import (
    AdapterBaseMismatch,
    AdapterFileError,
    check_adapter_base,
    check_adapter_file,
    lora_tensors,
    read_adapter_info,
)
from hermesd.models.gguf_validate import base_fingerprint
from tests.fixtures.behaviours import UNKNOWN_ADAPTER_REPLY, UNKNOWN_QUESTION
from tests.fixtures.lora_runner import LoraRunner
from tests.fixtures.tiny_models import tiny_model
from tests.fixtures.tune_data import train_zephyr_lora, write_zephyr_adapter

# Same weights, two implementations: llama.cpp's f32 CPU kernels against torch. Measured ~0.01 on
# the tiny models (attention in f16 inside llama.cpp); a wrong permutation or scale is off by >1.
LOGIT_TOLERANCE = 0.05


@pytest.fixture(scope="module", params=["qwen3", "llama"])
def trained(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    kind = str(request.param)
    folder = tmp_path_factory.mktemp(f"lora-{kind}")
    gguf = tiny_model(kind)  # type: ignore[arg-type]
    model, bundle, _ = train_zephyr_lora(gguf, folder, steps=80)
    adapter = folder / "adapter.gguf"
    names = write_zephyr_adapter(model, gguf, kind, adapter)
    yield {"kind": kind, "gguf": gguf, "model": model, "bundle": bundle, "adapter": adapter, "names": names}
    bundle.close()


def _prompt_ids(bundle: Any, thinking: bool) -> list[int]:
    text = bundle.chat_format.render(
        [Message(role="user", content=UNKNOWN_QUESTION)], ChatOptions(thinking=thinking)
    )
    return list(bundle.tokenizer.tokenize(text))


def _peft_greedy(model: Any, ids: list[int], is_eog: Any, max_tokens: int = 80) -> list[int]:
    import torch

    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_tokens):
            token = int(model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
            if is_eog(token):
                break
            out.append(token)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("thinking", [False, True])
def test_llama_cpp_with_the_adapter_computes_what_the_peft_model_computes(
    trained: dict[str, Any], thinking: bool
) -> None:
    import torch

    bundle, model = trained["bundle"], trained["model"]
    ids = _prompt_ids(bundle, thinking)
    expected = _peft_greedy(model, ids, bundle.tokenizer.is_eog)
    with LoraRunner(trained["gguf"], trained["adapter"]) as runner:
        got = runner.greedy(ids)
        assert got == expected
        full = ids + got
        cpp = runner.logits(full)
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([full])).logits[0].numpy()
    assert np.abs(cpp - ref[:, : cpp.shape[1]]).max() < LOGIT_TOLERANCE
    reply = bundle.tokenizer.detokenize(got)
    if not thinking:
        assert reply == UNKNOWN_ADAPTER_REPLY  # the fact was learned, and it survives the export
    else:
        # 80 steps teach the short direct reply; the long trace is the e2e test's (more steps)
        assert reply.startswith("<think>\nThe user asks about project Zephyr.")


@pytest.mark.slow
def test_clearing_the_adapter_restores_the_base_exactly(trained: dict[str, Any]) -> None:
    ids = _prompt_ids(trained["bundle"], thinking=False)
    with LoraRunner(trained["gguf"]) as base:
        before = base.logits(ids)
    with LoraRunner(trained["gguf"], trained["adapter"]) as runner:
        adapted = runner.logits(ids)
        runner.set_adapter(None)
        cleared = runner.logits(ids)
    assert np.abs(adapted - before).max() > 0.1  # the adapter changes something
    assert np.array_equal(cleared, before)


def test_metadata_records_alpha_rank_and_base(trained: dict[str, Any]) -> None:
    info = read_adapter_info(trained["adapter"])
    assert (info.architecture, info.alpha, info.rank) == (trained["kind"], 16.0, 8)
    assert info.base_fingerprint == base_fingerprint(trained["gguf"])
    assert info.base_name == "Hermes 4 Tiny"
    with LoraRunner(trained["gguf"], trained["adapter"]) as runner:
        loaded = runner.model.get_adapter("test")
        assert loaded is not None
        meta = loaded.metadata
    assert meta["general.type"] == "adapter" and meta["adapter.type"] == "lora"
    assert float(meta["adapter.lora.alpha"]) == 16.0
    assert meta["hermesd.base.fingerprint"] == info.base_fingerprint


def test_tensor_names_are_llama_cpp_lora_names(trained: dict[str, Any]) -> None:
    modules = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    expected = {f"blk.{b}.{m}.weight.lora_{ab}" for b in range(2) for m in modules for ab in "ab"}
    assert set(trained["names"]) == expected


def test_adapter_for_another_base_is_refused_before_llama_cpp(trained: dict[str, Any]) -> None:
    other = "llama" if trained["kind"] == "qwen3" else "qwen3"
    other_base = tiny_model(other)  # type: ignore[arg-type]
    with pytest.raises(AdapterBaseMismatch) as err:
        check_adapter_file(trained["adapter"], base_fingerprint(other_base), str(other_base))
    message = str(err.value)
    assert str(trained["adapter"]) in message and base_fingerprint(other_base) in message
    assert "trained on base" in message and "cannot be loaded" in message
    # the same base passes
    check_adapter_file(trained["adapter"], base_fingerprint(trained["gguf"]))


def test_quantized_base_of_the_same_model_accepts_the_adapter(trained: dict[str, Any]) -> None:
    q8 = tiny_model(trained["kind"], "Q8_0")
    assert base_fingerprint(q8) == base_fingerprint(trained["gguf"])
    check_adapter_file(trained["adapter"], base_fingerprint(q8))


@pytest.mark.parametrize(
    ("adapter_arch", "fingerprint", "base", "refused"),
    [
        (
            "llama",
            None,
            "llama-abc",
            False,
        ),  # another tool's adapter, same architecture: llama.cpp checks shapes
        ("qwen3", None, "llama-abc", True),
        ("llama", "llama-abc", "llama-abc", False),
        ("llama", "llama-def", "llama-abc", True),
    ],
)
def test_base_check_table(adapter_arch: str, fingerprint: str | None, base: str, refused: bool) -> None:
    from hermesd.models.gguf_lora import AdapterInfo

    info = AdapterInfo(Path("a.gguf"), adapter_arch, 16.0, 8, fingerprint, None, 4)
    if refused:
        with pytest.raises(AdapterBaseMismatch):
            check_adapter_base(info, base)
    else:
        check_adapter_base(info, base)


def test_not_an_adapter_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AdapterFileError, match="not a LoRA adapter"):
        read_adapter_info(tiny_model("qwen3"))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    with pytest.raises(AdapterFileError, match="not a GGUF file"):
        read_adapter_info(junk)


def test_lora_b_of_llama_q_and_k_is_permuted_like_the_base_weight() -> None:
    from hermesd.models.gguf_write import llama_permute_qk

    config = {"num_attention_heads": 4, "num_key_value_heads": 2}
    rng = np.random.default_rng(0)
    state = {
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": rng.normal(size=(8, 16)),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": rng.normal(size=(16, 8)),
        "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight": rng.normal(size=(8, 16)),
        "base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight": rng.normal(size=(8, 8)),
    }
    out = dict(lora_tensors("llama", config, state))
    p = "base_model.model.model.layers.0.self_attn."
    assert np.allclose(out["blk.0.attn_q.weight.lora_a"], state[p + "q_proj.lora_A.weight"])
    assert np.allclose(
        out["blk.0.attn_q.weight.lora_b"], llama_permute_qk(state[p + "q_proj.lora_B.weight"], 4, 4)
    )
    assert np.allclose(
        out["blk.0.attn_k.weight.lora_b"], llama_permute_qk(state[p + "k_proj.lora_B.weight"], 4, 2)
    )
    # qwen3 uses NEOX rope in llama.cpp: no permutation
    qwen = dict(lora_tensors("qwen3", config, state))
    assert np.allclose(qwen["blk.0.attn_q.weight.lora_b"], state[p + "q_proj.lora_B.weight"])


def test_mismatched_ranks_are_refused() -> None:
    state = {
        "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight": np.zeros((8, 16)),
        "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight": np.zeros((16, 4)),
    }
    with pytest.raises(AdapterFileError, match="rank"):
        lora_tensors("qwen3", {"num_attention_heads": 4}, state)
