"""The chunked loss (runtime/tune/train.py `token_loss_sum`) against the whole-logits loss it
replaces, on tiny random llama, qwen3 and seed_oss models with a LoRA: the same sum, the same LoRA
gradients, whatever the chunk, with padding and prompt tokens in the batch."""

from __future__ import annotations

from typing import Any

import pytest

from hermesd.runtime.tune.config import TrainConfig
from hermesd.runtime.tune.render import Row
from hermesd.runtime.tune.train import (
    IGNORE,
    _decoder_and_head,
    attach_lora,
    evaluate,
    make_batch,
    token_loss_sum,
)

VOCAB = 101


def tiny_lora_model(arch: str) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        arch,
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    for p in model.parameters():
        p.requires_grad_(False)
    model = attach_lora(model, TrainConfig(rank=4, dropout=0.0))
    # B starts at zero, which would leave A's gradients zero and the test blind to them
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model


def row(ids: list[int], trained: list[bool]) -> Row:
    return Row(line=1, ids=tuple(ids), trained=tuple(trained), reasoning=False)


def rows() -> list[Row]:
    # a prompt (untrained) then an answer (trained), of three lengths: the batch pads two of them
    out = []
    for i, (prompt, answer) in enumerate([(5, 9), (3, 20), (11, 4)]):
        ids = [(7 * i + 3 * j) % VOCAB for j in range(prompt + answer)]
        out.append(row(ids, [False] * prompt + [True] * answer))
    return out


def whole_logits_loss(model: Any, batch: dict[str, Any]) -> Any:
    """The loss as it was before chunking: every position's logits at once."""
    import torch

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    flat = logits[:, :-1, :].reshape(-1, logits.shape[-1]).float()
    targets = batch["labels"][:, 1:].reshape(-1)
    return torch.nn.functional.cross_entropy(flat, targets, ignore_index=IGNORE, reduction="sum")


def lora_grads(model: Any, loss: Any) -> dict[str, Any]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch", ["llama", "qwen3", "seed_oss"])  # Hermes 4's three architectures
@pytest.mark.parametrize("chunk", [1, 7, 1024])  # one token, a chunk that splits rows, all at once
def test_chunked_loss_equals_the_whole_logits_loss_and_its_gradients(arch: str, chunk: int) -> None:
    import torch

    model = tiny_lora_model(arch)
    assert _decoder_and_head(model) is not None  # the chunked path, not the whole-logits fallback
    batch = make_batch(rows(), pad_id=0)
    torch.manual_seed(1)  # the same dropout masks in both (seed_oss drops out of its residuals)
    expected = whole_logits_loss(model, batch)
    expected_grads = lora_grads(model, expected)
    torch.manual_seed(1)
    loss, n = token_loss_sum(model, batch, chunk=chunk)
    grads = lora_grads(model, loss)
    assert n == 9 + 20 + 4  # every answer token, none of the prompts' or the padding
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert grads.keys() == expected_grads.keys() and len(grads) == 2 * 7 * 2  # A and B, 7 targets, 2 layers
    for name, g in grads.items():
        assert torch.allclose(g, expected_grads[name], rtol=1e-4, atol=1e-5), name
        assert float(g.abs().max()) > 0, name


def test_evaluate_chunks_without_gradients_and_matches() -> None:
    import torch

    model = tiny_lora_model("qwen3")
    with torch.no_grad():
        batch = make_batch(rows()[:1], pad_id=0)
        expected = float(whole_logits_loss(model, batch)) / 9
    assert evaluate(model, rows()[:1], batch_size=1, pad_id=0) == pytest.approx(expected, rel=1e-5)
    assert model.training  # evaluate puts the model back as it found it


def test_a_batch_without_labels_is_zero_and_still_runs_backward() -> None:
    model = tiny_lora_model("llama")
    batch = make_batch([row([1, 2, 3, 4], [False] * 4)], pad_id=0)
    loss, n = token_loss_sum(model, batch, chunk=2)
    loss.backward()
    assert (n, float(loss.detach())) == (0, 0.0)
