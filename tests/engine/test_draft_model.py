"""A draft model (runtime/engine/draft_model.py) in the engine: the drafts of a model identical to
the target are all kept, one with another vocabulary is refused with a message that says why, and
one that cannot be loaded leaves the engine serving without it, saying so in the log. (That its
drafts never change the output is tests/engine/test_speculation.py, source "draft".)"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hermesd.runtime.engine.context_settings import ContextSettings
from hermesd.runtime.engine.llama_model import LlamaModelConfig
from hermesd.runtime.engine.llamacpp import EngineConfig, LlamaCppEngine
from hermesd.runtime.engine.protocol import GenerationRequest, SamplingParams
from hermesd.runtime.engine.speculation import DRAFT, SpeculationSettings
from hermesd.runtime.errors import DraftVocabMismatch
from tests.engine.test_speculation import PROMPTS, generate
from tests.fixtures.tiny_models import tiny_model

GREEDY = SamplingParams(temperature=0.0)
CONTEXT = ContextSettings(ctx=1024, parallel=4, threads=2)


def engine_with_draft(draft: Path, target: Path | None = None) -> LlamaCppEngine:
    model = LlamaModelConfig(path=target or tiny_model("qwen3"))
    # every draft verified (priced=False): these tests are about the draft model, not what pays
    settings = SpeculationSettings(priced=False)
    return LlamaCppEngine(EngineConfig(model, CONTEXT, settings, draft=LlamaModelConfig(draft)))


def test_a_draft_identical_to_the_model_is_always_right() -> None:
    """Greedy drafts of the model itself are what the model samples greedily: every one is kept,
    and streams of several requests together draft in the same step."""
    engine = engine_with_draft(tiny_model("qwen3"))
    try:
        replies = generate(engine, [GenerationRequest(p, 80, GREEDY, ignore_eos=True) for p in PROMPTS])
        stats = engine.stats()
        assert all(r.completion_tokens == 80 for r in replies)
        drafted, accepted = stats.spec_drafted.get(DRAFT, 0), stats.spec_accepted.get(DRAFT, 0)
        assert drafted > 0 and accepted == drafted, stats
        # 4 x 80 tokens in far fewer steps than 80: drafts of several tokens were verified at once
        assert stats.decode_steps < 60, stats
    finally:
        engine.close()


def test_a_draft_with_another_vocabulary_is_refused() -> None:
    with pytest.raises(DraftVocabMismatch) as err:
        engine_with_draft(tiny_model("llama"))
    message = str(err.value)
    assert "cannot draft for" in message and "vocabulary" in message


@pytest.mark.parametrize("problem", ["missing", "damaged"])
def test_a_draft_that_cannot_load_leaves_the_engine_serving_without_it(
    problem: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    draft = tmp_path / "draft.gguf"
    if problem == "damaged":
        data = tiny_model("qwen3", "Q8_0").read_bytes()
        draft.write_bytes(data[: len(data) // 2])
    caplog.set_level(logging.WARNING, logger="hermesd")
    engine = engine_with_draft(draft)
    try:
        assert engine.drafter is None
        (reply,) = generate(engine, [GenerationRequest(PROMPTS[0], 20, GREEDY, ignore_eos=True)])
        assert reply.completion_tokens == 20
        assert engine.stats().spec_drafted == {}
    finally:
        engine.close()
    assert any(
        "serving without the draft model" in r.getMessage() and str(draft) in r.getMessage()
        for r in caplog.records
    ), caplog.text


def test_the_priced_rule_with_both_sources_keeps_the_greedy_text() -> None:
    """Lookup and a draft model both on, with the priced rule choosing what each step verifies and
    which source each stream drafts with: the greedy text is the plain engine's."""
    model = LlamaModelConfig(path=tiny_model("qwen3"))
    context = ContextSettings(ctx=1024, parallel=4, threads=2, kv_unified=False)
    plain = LlamaCppEngine(EngineConfig(model, context))
    draft = LlamaModelConfig(tiny_model("qwen3", "Q8_0"))
    spec = LlamaCppEngine(EngineConfig(model, context, SpeculationSettings(ngram=True), draft=draft))
    requests = [GenerationRequest(p, 160, GREEDY, ignore_eos=True) for p in PROMPTS]
    try:
        assert generate(spec, requests) == generate(plain, requests)
        assert spec.stats().spec_drafted, "nothing was drafted: the rule was not exercised"
    finally:
        spec.close()
        plain.close()
