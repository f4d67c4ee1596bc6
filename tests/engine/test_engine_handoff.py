"""The engine hands a stream's first token to its consumer before it decodes on.

With a fast model, a decoder that did not wait would have the whole reply done before the event
loop got round to sending the first chunk (2 busy cores, one GIL): the first chunk would carry
everything, and time to first token would be the time of the whole reply.
"""

from __future__ import annotations

import asyncio

import pytest

from hermesd.runtime.engine import llamacpp
from hermesd.runtime.engine.context_settings import ContextSettings
from hermesd.runtime.engine.llama_model import LlamaModelConfig
from hermesd.runtime.engine.llamacpp import EngineConfig, LlamaCppEngine
from hermesd.runtime.engine.protocol import FinishEvent, GenerationRequest, SamplingParams, TextEvent
from tests.fixtures.tiny_models import tiny_model


@pytest.mark.parametrize("consumer_late_s", [0.0, 0.3])
def test_first_token_is_handed_over_before_decoding_on(
    monkeypatch: pytest.MonkeyPatch, consumer_late_s: float
) -> None:
    # wait as long as it takes, so the outcome does not depend on the machine's speed
    monkeypatch.setattr(llamacpp, "FIRST_TOKEN_HANDOFF_S", 60.0)
    engine = LlamaCppEngine(
        EngineConfig(
            LlamaModelConfig(path=tiny_model("qwen3")), ContextSettings(ctx=1024, parallel=2, threads=2)
        )
    )

    async def run() -> list[TextEvent | FinishEvent]:
        request = GenerationRequest("zq", 300, SamplingParams(temperature=0.0), ignore_eos=True)
        stream = await engine.submit(request)
        await asyncio.sleep(consumer_late_s)  # a busy event loop, late to take the first token
        return [e async for e in stream]  # type: ignore[misc]

    try:
        events = asyncio.run(run())
        texts = [e.text for e in events if isinstance(e, TextEvent)]
        first_chunk_tokens = len(engine.model.tokenize(texts[0], add_bos=False))
    finally:
        engine.close()
    finish = events[-1]
    assert isinstance(finish, FinishEvent) and finish.usage.completion_tokens == 300
    # the first chunk is the first token alone, not everything decoded while nobody was listening
    assert first_chunk_tokens <= 2, texts[0]
