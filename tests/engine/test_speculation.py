"""Speculative decoding changes speed, never output (issue 17), whichever source drafts: n-gram
lookup, or a draft model (the tiny model's Q8_0 copy drafting for its F32 original: it agrees
mostly, not always, so drafts are both kept and rejected).

The same requests run on two engines over the same tiny model, one with speculation and one
without: greedy text is identical (with stop strings, a grammar and a reasoning budget, at 1 and 4
streams), and over many replies drawn with other seeds the distribution is the same (chi-square).
Each test also checks that drafts were made and kept, so it cannot pass with speculation silently
off.

A seeded sampled reply is reproducible with speculation, but not promised to be the same text as
without it: llama.cpp's CPU kernels give a token decoded in a batch of several slightly other logits
than the same token decoded alone (measured on this AVX-512 machine: up to 5e-4 on the tiny F32
model), and at temperature > 0 such a difference can move a sample near a boundary (seen: the last
token of one 160-token reply of four, with the draft model). Greedy picks an argmax, which such
differences move only at a near tie.

At 4 streams both engines give each sequence its own KV stream (`kv_unified=False`). In the shared
(unified) cache that hermesd uses by default, attention sums a sequence's cells in the order they
lie in the buffer, and other sequences decide that order: with or without speculation, the last
bits of the logits then depend on concurrent traffic, and at a near tie so does a greedy token (seen
here: one reply of 4 differed after 165 characters on the tiny Llama, and matched once the streams
were separate). Separate streams take that out, so these tests see the verifier alone.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from scipy.stats import chi2_contingency

from hermesd.models.formats.reasoning import Reasoning
from hermesd.runtime.engine.context_settings import ContextSettings
from hermesd.runtime.engine.grammars import schema_grammar
from hermesd.runtime.engine.llama_model import LlamaModelConfig
from hermesd.runtime.engine.llamacpp import EngineConfig, LlamaCppEngine
from hermesd.runtime.engine.protocol import (
    EngineStats,
    FinishEvent,
    GenerationRequest,
    SamplingParams,
    TextEvent,
)
from hermesd.runtime.engine.speculation import DRAFT, NGRAM, SpeculationSettings
from tests.fixtures.tiny_models import tiny_model

ARCHES = ["qwen3", "llama"]
# a prompt that repeats itself: the tiny models continue it by copying, which is what n-gram
# lookup predicts; "zq zq" is one they were never taught
PROMPTS = [
    "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the",
    "def add(a, b):\n    return a + b\n\ndef add(a, b):\n",
    "zq zq",
    "one two three four five one two three four five one two",
]


@dataclass(frozen=True)
class Reply:
    text: str
    reason: str
    completion_tokens: int
    reasoning_tokens: int


def speculating(arch: str, source: str) -> tuple[SpeculationSettings, LlamaModelConfig | None]:
    """The engine settings that make `source` draft for the tiny `arch` model; every draft is
    verified (priced=False): these tests are about what verification gives, not what pays."""
    if source == NGRAM:
        return SpeculationSettings(ngram=True, priced=False), None
    return SpeculationSettings(priced=False), LlamaModelConfig(path=tiny_model(arch, "Q8_0"))


class Pair:
    """One engine without speculation and one with it, over the same model file; `streams`
    requests run together (one at a time when 1)."""

    def __init__(self, arch: str, streams: int, source: str = NGRAM) -> None:
        self.arch, self.streams, self.source = arch, streams, source
        model = LlamaModelConfig(path=tiny_model(arch))
        context = ContextSettings(ctx=1024, parallel=4, threads=2, kv_unified=streams == 1)
        self.plain = LlamaCppEngine(EngineConfig(model, context))
        speculation, draft = speculating(arch, source)
        self.spec = LlamaCppEngine(EngineConfig(model, context, speculation, draft=draft))

    def run(self, engine: LlamaCppEngine, requests: list[GenerationRequest]) -> list[Reply]:
        step = self.streams
        return [r for i in range(0, len(requests), step) for r in generate(engine, requests[i : i + step])]

    def close(self) -> None:
        self.plain.close()
        self.spec.close()


@pytest.fixture(
    scope="module",
    params=[(arch, streams, source) for source in (NGRAM, DRAFT) for arch in ARCHES for streams in (1, 4)],
    ids=lambda p: f"{p[2]}-{p[0]}-{p[1]}streams",
)
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    p = Pair(*request.param)
    try:
        yield p
    finally:
        p.close()


def generate(engine: LlamaCppEngine, requests: list[GenerationRequest]) -> list[Reply]:
    """All requests at once (they share decode steps), in order."""

    async def one(request: GenerationRequest) -> Reply:
        stream = await engine.submit(request)
        events = [e async for e in stream]
        finish = events[-1]
        assert isinstance(finish, FinishEvent) and finish.error is None, finish
        text = "".join(e.text for e in events if isinstance(e, TextEvent))
        u = finish.usage
        return Reply(text, finish.reason, u.completion_tokens, u.reasoning_tokens)

    async def run() -> list[Reply]:
        return list(await asyncio.gather(*(one(r) for r in requests)))

    return asyncio.run(run())


def spec_counts(before: EngineStats, after: EngineStats, source: str = NGRAM) -> tuple[int, int]:
    drafted = after.spec_drafted.get(source, 0) - before.spec_drafted.get(source, 0)
    accepted = after.spec_accepted.get(source, 0) - before.spec_accepted.get(source, 0)
    return drafted, accepted


def both(pair: Pair, requests: list[GenerationRequest]) -> tuple[list[Reply], list[Reply]]:
    before = pair.spec.stats()
    plain, spec = pair.run(pair.plain, requests), pair.run(pair.spec, requests)
    drafted, accepted = spec_counts(before, pair.spec.stats(), pair.source)
    assert drafted > 0 and accepted > 0, "speculation never drafted or never kept a draft"
    assert pair.plain.stats().spec_drafted == {}
    return plain, spec


GREEDY = SamplingParams(temperature=0.0)


def test_greedy_text_is_identical(pair: Pair) -> None:
    requests = [GenerationRequest(p, 160, GREEDY, ignore_eos=True) for p in PROMPTS]
    plain, spec = both(pair, requests)
    assert spec == plain


def test_greedy_with_stop_strings_is_identical(pair: Pair) -> None:
    # the stop string is taken from the middle of the longest plain reply, so it is met somewhere
    # inside a draft (where the reply is depends on the trained tiny model: not pinned to a prompt)
    references = pair.run(pair.plain, [GenerationRequest(p, 120, GREEDY, ignore_eos=True) for p in PROMPTS])
    longest = max(range(len(PROMPTS)), key=lambda i: len(references[i].text))
    text = references[longest].text
    stop = next(
        (text[i : i + 4] for i in range(len(text) // 2, len(text) - 3) if text[i : i + 4].strip()), ""
    )
    assert len(text) >= 12 and stop, text
    requests = [GenerationRequest(p, 120, GREEDY, ignore_eos=True, stop=[stop]) for p in PROMPTS]
    plain, spec = both(pair, requests)
    assert spec == plain
    assert plain[longest].reason == "stop" and stop not in plain[longest].text


def test_greedy_under_a_grammar_is_identical(pair: Pair) -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "array", "items": {"type": "integer"}}},
        "required": ["a", "b"],
    }
    grammar = schema_grammar(schema, "response_format")
    requests = [GenerationRequest(p, 120, GREEDY, grammar=grammar) for p in PROMPTS]
    plain, spec = both(pair, requests)
    assert spec == plain
    assert all(r.text.lstrip().startswith("{") for r in plain)


def test_greedy_under_a_reasoning_budget_is_identical(pair: Pair) -> None:
    # the prompt opens the reasoning; the budget closes it in the middle of what was drafted
    budget = Reasoning(thinking=True, budget=24, starts_open=True)
    requests = [
        GenerationRequest(p + " <think>\n", 120, GREEDY, ignore_eos=True, reasoning=budget) for p in PROMPTS
    ]
    plain, spec = both(pair, requests)
    assert spec == plain
    assert all("</think>" in r.text for r in plain)


def test_a_seeded_sampled_reply_is_reproducible(pair: Pair) -> None:
    requests = [
        GenerationRequest(p, 160, SamplingParams(temperature=0.7, seed=11 + i), ignore_eos=True)
        for i, p in enumerate(PROMPTS)
    ]
    before = pair.spec.stats()
    first, again = pair.run(pair.spec, requests), pair.run(pair.spec, requests)
    drafted, accepted = spec_counts(before, pair.spec.stats(), pair.source)
    assert drafted > 0 and accepted > 0
    assert again == first


# the tiny Llama does not copy its prompt when sampling: no n-gram draft would be kept
@pytest.mark.parametrize(
    "pair",
    [("qwen3", 1, NGRAM), ("qwen3", 4, NGRAM), ("qwen3", 1, DRAFT)],
    indirect=True,
    ids=["ngram-1stream", "ngram-4streams", "draft-1stream"],
)
def test_sampled_token_distribution_matches(pair: Pair) -> None:
    """Replies drawn with different seeds on each side: the distribution of the short replies must
    agree.

    One category per reply (its whole text: 5 tokens, 4 of them possibly drafted), because the
    tokens of one reply are not independent. Threshold: the chi-square homogeneity test over the
    12 most frequent replies (the rest pooled) must give p > 0.001. The seeds are fixed, so the
    outcome is fixed too; a verifier that kept drafts it should have rejected moves mass to the
    copied text and fails it (tried: p < 0.001 at 1 and 4 streams)."""
    n, length = 240, 5
    prompt = PROMPTS[1]

    def sampling(seed: int) -> SamplingParams:
        return SamplingParams(temperature=0.5, top_k=0, top_p=1.0, seed=seed)

    def tokens(engine: LlamaCppEngine, first_seed: int) -> collections.Counter[str]:
        counts: collections.Counter[str] = collections.Counter()
        for start in range(first_seed, first_seed + n, 4):
            batch = [
                GenerationRequest(prompt, length, sampling(s), ignore_eos=True)
                for s in range(start, start + 4)
            ]
            for reply in pair.run(engine, batch):
                counts[reply.text] += 1
        return counts

    before = pair.spec.stats()
    plain, spec = tokens(pair.plain, 0), tokens(pair.spec, 10_000)
    drafted, accepted = spec_counts(before, pair.spec.stats(), pair.source)
    assert drafted > 0 and accepted > 0
    top = [t for t, _ in (plain + spec).most_common(12)]
    rows = [[c[t] for t in top] + [n - sum(c[t] for t in top)] for c in (plain, spec)]
    columns = [col for col in zip(*rows, strict=True) if sum(col) > 0]
    p = chi2_contingency([list(row) for row in zip(*columns, strict=True)]).pvalue
    assert p > 0.001, (p, rows)


@pytest.mark.parametrize(
    ("crowded_match", "crowded_drafts"),
    [
        (0, False),  # nothing drafts in a crowded step
        # only streams whose last 256 tokens occurred before: none, in replies this short
        (256, False),
        # streams whose last 8 tokens occurred before: these prompts repeat themselves, and the
        # tiny model's greedy replies loop
        (8, True),
    ],
)
def test_a_crowded_step_drafts_only_for_streams_copying_text(
    crowded_match: int, crowded_drafts: bool
) -> None:
    """A batch of many streams already keeps the hardware busy: above `max_streams` streams in a
    step only the streams whose last `crowded_match` tokens repeat earlier text draft; at or below
    it every stream may."""
    model = LlamaModelConfig(path=tiny_model("qwen3"))
    context = ContextSettings(ctx=1024, parallel=4, threads=2)
    settings = SpeculationSettings(ngram=True, max_streams=2, crowded_match=crowded_match, priced=False)
    engine = LlamaCppEngine(EngineConfig(model, context, settings))

    def together(requests: list[GenerationRequest]) -> int:
        """Drafted tokens when `requests` start in the same step: the decode thread is held
        until all of them are queued."""
        running, gate = threading.Event(), threading.Event()

        def hold() -> bool:
            running.set()
            return gate.wait(30)

        holder = threading.Thread(target=engine.scheduler.call, args=(hold,))
        holder.start()
        assert running.wait(30)

        async def run() -> None:
            streams = [await engine.submit(r) for r in requests]
            gate.set()
            for stream in streams:
                events = [e async for e in stream]
                assert isinstance(events[-1], FinishEvent) and events[-1].reason == "length"

        before = engine.stats()
        asyncio.run(run())
        holder.join(30)
        return spec_counts(before, engine.stats())[0]

    try:
        requests = [GenerationRequest(p, 60, GREEDY, ignore_eos=True) for p in PROMPTS]
        assert (together(requests) > 0) == crowded_drafts  # 4 streams in every step
        assert together(requests[:2]) > 0  # 2 streams
    finally:
        engine.close()


@pytest.mark.parametrize("arch", ARCHES)
def test_a_request_asked_again_drafts_from_the_pool(arch: str) -> None:
    """Lookup also searches earlier requests' text (NgramPool): the same request asked again
    drafts more of its reply than with the pool off (pool_match 0), and the text stays the same."""
    model = LlamaModelConfig(path=tiny_model(arch))
    context = ContextSettings(ctx=1024, parallel=4, threads=2)
    # a prompt longer than the pool's 16-token runs, which does not repeat itself
    prompt = "A note on zebras, kettles, violins, lanterns and the weather in the north of the island:"
    request = GenerationRequest(prompt, 60, GREEDY, ignore_eos=True)
    accepted: dict[int, list[int]] = {}
    texts: set[str] = set()
    for pool_match in (16, 0):
        engine = LlamaCppEngine(
            EngineConfig(model, context, SpeculationSettings(ngram=True, pool_match=pool_match, priced=False))
        )
        try:
            for _ in range(2):
                before = engine.stats()
                texts.add(generate(engine, [request])[0].text)
                accepted.setdefault(pool_match, []).append(spec_counts(before, engine.stats())[1])
        finally:
            engine.close()
    assert len(texts) == 1, texts
    assert accepted[16][0] == accepted[0][0], accepted  # the first time, the pool is empty
    # asked again, at least half of the reply comes from kept drafts (seen: 46 and 53 of 60, against
    # 6 and 33 without the pool; not all: a draft starts at 8 tokens and grows, and in the tiny
    # model's looping reply one run of 16 tokens has several followers, of which the pool keeps one)
    assert accepted[16][1] > accepted[0][1] and accepted[16][1] >= 30, accepted


def test_a_step_wider_than_any_before_is_not_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The priced rule learns what a step costs from the steps it times, except a step that reads
    more rows of logits than any before it: llama.cpp grows its output buffer for that step, once,
    and timed it reads about twice as dear per row as later steps of its size (on Gemma 3 270M at
    16 streams), which stopped drafts of that size."""
    import llama_cpp.llama_cpp as ll

    model = LlamaModelConfig(path=tiny_model("qwen3"))
    context = ContextSettings(ctx=1024, parallel=4, threads=2)
    engine = LlamaCppEngine(EngineConfig(model, context, SpeculationSettings(ngram=True)))
    economy = engine.scheduler.economy
    assert economy is not None, "the priced rule is the default"
    steps: list[list[int]] = []  # [rows with logits, timed]
    decode, observe = ll.llama_decode, economy.observe_step

    def recording_decode(ctx: object, batch: ll.llama_batch) -> int:
        steps.append([sum(1 for i in range(batch.n_tokens) if batch.logits[i]), 0])
        return decode(ctx, batch)

    def recording_observe(tokens: int, seconds: float) -> None:
        assert steps[-1][0] == tokens  # a step is timed right after its own decode
        steps[-1][1] = 1
        observe(tokens, seconds)

    monkeypatch.setattr(ll, "llama_decode", recording_decode)
    monkeypatch.setattr(economy, "observe_step", recording_observe)
    try:
        requests = [GenerationRequest(p, 60, GREEDY, ignore_eos=True) for p in PROMPTS]
        generate(engine, requests)
        generate(engine, requests[:1])
    finally:
        engine.close()
    timed = [rows for rows, t in steps if t]
    assert timed and engine.stats().spec_drafted, steps  # steps were timed, and drafts verified
    widest = 0
    new_widths = 0
    for rows, t in steps:
        if t:
            assert rows <= widest, f"a step of {rows} rows was timed, wider than any before ({widest})"
        elif rows > widest and widest:
            new_widths += 1
        widest = max(widest, rows)
    assert new_widths > 0, steps  # drafts made wider steps than plain ones, and those were skipped
