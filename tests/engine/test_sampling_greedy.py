"""Plain greedy requests take the argmax straight from the logits (runtime/engine/sampling.py): it must
be the token llama.cpp's own greedy sampler picks, on every row of a real decode, and the fast path
must be taken only where it is that sampler (no grammar, no penalties, temperature 0)."""

from __future__ import annotations

from collections.abc import Iterator

import llama_cpp.llama_cpp as ll
import numpy as np
import pytest

from hermesd.runtime.engine.context_settings import ContextSettings
from hermesd.runtime.engine.llama_model import LlamaModel, LlamaModelConfig
from hermesd.runtime.engine.protocol import SamplingParams
from hermesd.runtime.engine.sampling import SamplerChain
from tests.fixtures.tiny_models import tiny_model

PROMPT = "The quick brown fox jumps over the lazy dog. One two three four five six seven"


@pytest.fixture(scope="module", params=["qwen3", "llama"])
def decoded(request: pytest.FixtureRequest) -> Iterator[tuple[LlamaModel, object, int]]:
    """A context whose last decode has logits on every row of the prompt."""
    model = LlamaModel(LlamaModelConfig(tiny_model(request.param)))
    ctx = ll.llama_init_from_model(model.handle, ContextSettings(ctx=256, parallel=1, threads=2).fill(
        ll.llama_context_default_params()))  # fmt: skip
    tokens = model.tokenize(PROMPT)
    batch = ll.llama_batch_init(len(tokens), 0, 1)
    for i, tok in enumerate(tokens):
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = tok, i, 1, 1
        batch.seq_id[i][0] = 0
    batch.n_tokens = len(tokens)
    assert ll.llama_decode(ctx, batch) == 0
    try:
        yield model, ctx, len(tokens)
    finally:
        ll.llama_batch_free(batch)
        ll.llama_free(ctx)
        model.close()


def test_the_argmax_is_llama_cpps_greedy_token_on_every_row(decoded: tuple[LlamaModel, object, int]) -> None:
    model, ctx, rows = decoded
    fast = SamplerChain(SamplingParams(temperature=0.0), vocab=model.vocab)
    reference = ll.llama_sampler_init_greedy()
    try:
        assert fast.argmax_only
        picks = [fast.sample(ctx, i) for i in range(rows)]  # type: ignore[arg-type]
        assert picks == [int(ll.llama_sampler_sample(reference, ctx, i)) for i in range(rows)]
        # the rows differ, so the comparison is not of one repeated token
        assert len(set(picks)) > 1
        logits = np.ctypeslib.as_array(ll.llama_get_logits_ith(ctx, 0), shape=(model.n_vocab,))
        assert picks[0] == int(np.argmax(logits))
    finally:
        fast.close()
        ll.llama_sampler_free(reference)


@pytest.mark.parametrize(
    ("params", "grammar", "fast"),
    [
        (SamplingParams(temperature=0.0), None, True),
        (SamplingParams(temperature=0.0, repeat_penalty=1.1), None, False),
        (SamplingParams(temperature=0.0, presence_penalty=0.5), None, False),
        (SamplingParams(temperature=0.0), 'root ::= "a"', False),
        (SamplingParams(temperature=0.7), None, False),
    ],
)
def test_the_fast_path_only_where_it_is_the_greedy_sampler(
    decoded: tuple[LlamaModel, object, int], params: SamplingParams, grammar: str | None, fast: bool
) -> None:
    model, _, _ = decoded
    chain = SamplerChain(params, vocab=model.vocab, grammar=grammar)
    try:
        assert chain.argmax_only is fast
    finally:
        chain.close()
