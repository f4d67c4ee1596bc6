"""N-gram lookup drafts (runtime/engine/speculation.py): what is proposed, and how the draft length
follows the acceptance of each stream; and the rule for whether a draft model's vocabulary is the
target's."""

from __future__ import annotations

import dataclasses

import pytest

from hermesd.runtime.engine.speculation import (
    NgramDrafter,
    NgramPool,
    PoolView,
    SpeculationSettings,
    VocabFacts,
    vocab_mismatch,
)

S = SpeculationSettings(ngram=True, max_draft=8, start=4, misses_before_pause=2, pause=3)


@pytest.mark.parametrize(
    ("history", "limit", "draft"),
    [
        # the last 2 tokens (5, 6) occurred before: propose what followed them
        ([5, 6, 7, 8, 9, 1, 5, 6], 8, [7, 8, 9, 1]),
        # the longest n-gram wins: (1, 2, 3) was followed by 9, (2, 3) more recently by 4
        ([1, 2, 3, 9, 9, 2, 3, 4, 4, 1, 2, 3], 8, [9, 9, 2, 3]),
        # the latest occurrence of an n-gram wins
        ([5, 6, 1, 5, 6, 2, 5, 6], 8, [2, 5, 6]),
        # no more than asked for
        ([5, 6, 7, 8, 9, 1, 5, 6], 2, [7, 8]),
        ([5, 6, 7, 8, 9, 1, 5, 6], 0, []),
        # nothing repeats: no draft (the suffix never matches itself)
        ([1, 2, 3, 4, 5, 6], 8, []),
        ([7, 7], 8, []),
        ([], 8, []),
        # a run of one token predicts more of it
        ([7, 7, 7, 7], 8, [7]),
    ],
)
def test_proposals(history: list[int], limit: int, draft: list[int]) -> None:
    assert NgramDrafter(S).propose(history, limit) == draft


@pytest.mark.parametrize(
    ("history", "min_match", "draft"),
    [
        # (3, 4, 5, 6) occurred before, after 1, 2: a match of 6 tokens
        ([1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3, 4, 5, 6], 6, [7, 8, 0, 1]),
        ([1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3, 4, 5, 6], 7, []),
        # the match is counted back past the longest n-gram: 9 before 3 differs from 2 before 3
        ([9, 3, 4, 5, 6, 7, 8, 0, 2, 3, 4, 5, 6], 4, [7, 8, 0, 2]),
        ([9, 3, 4, 5, 6, 7, 8, 0, 2, 3, 4, 5, 6], 5, []),
        # at most the n-gram itself: no counting back
        ([5, 6, 7, 8, 9, 1, 5, 6], 2, [7, 8, 9, 1]),
        ([5, 6, 7, 8, 9, 1, 5, 6], 3, []),
        # the earlier occurrence starts the history: the match cannot be longer than it
        ([5, 6, 7, 1, 5, 6, 7], 4, []),
    ],
)
def test_a_shorter_match_than_min_match_drafts_nothing(
    history: list[int], min_match: int, draft: list[int]
) -> None:
    assert NgramDrafter(S).propose(history, 8, min_match) == draft


def test_the_index_grows_with_the_history() -> None:
    d = NgramDrafter(S)
    history = [1, 2, 3, 4]
    assert d.propose(history, 8) == []
    history += [1, 2]  # the output repeats the prompt's start
    assert d.propose(history, 8) == [3, 4, 1, 2]
    history += [3, 4, 9]
    assert d.propose(history, 8) == []  # (4, 9) and (9,) are new
    history += [1, 2, 3]
    assert d.propose(history, 8) == [4, 9, 1, 2]  # the latest (1, 2, 3) was followed by 4, 9
    assert d.indexed == len(history)


def test_draft_length_follows_acceptance() -> None:
    d = NgramDrafter(S)
    assert d.length == 4
    d.update(4, 4)
    assert d.length == 8
    d.update(8, 8)
    assert d.length == 8  # capped at max_draft
    d.update(8, 2)
    assert d.length == 3  # what was kept, plus one
    d.update(3, 0)
    assert d.length == 1
    d.update(0, 0)  # no draft: nothing learned
    assert d.length == 1


def test_a_stream_that_keeps_missing_pauses_then_tries_again() -> None:
    d = NgramDrafter(S)
    history = [5, 6, 7, 5, 6]
    assert d.propose(history, 8)
    d.update(2, 0)
    d.update(1, 0)  # second miss in a row: pause for 3 proposals
    assert [d.propose(history, 8) for _ in range(3)] == [[], [], []]
    assert d.propose(history, 8) == [7, 5, 6][: d.length]


# -- the pool of earlier requests' text

EARLIER = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]


@pytest.mark.parametrize(
    ("history", "take", "salt", "draft"),
    [
        # the last 3 tokens ran in an earlier request: what followed them, token by token
        ([20, 3, 4, 5], 4, (), [6, 7, 8, 9]),
        ([20, 3, 4, 5], 2, (), [6, 7]),
        # up to where the earlier text ends
        ([7, 8, 9], 8, (), [10]),
        ([8, 9, 10], 8, (), []),
        # a 2-token run is not enough, nor a run that never occurred
        ([4, 5], 8, (), []),
        ([3, 4, 6], 8, (), []),
        # another adapter set's text does not draft
        ([20, 3, 4, 5], 4, (("style", 1.0),), []),
    ],
)
def test_pool_proposals(history: list[int], take: int, salt: tuple[object, ...], draft: list[int]) -> None:
    pool = NgramPool(3, slots=64)
    pool.add(EARLIER)
    assert pool.propose(history, take, salt) == draft


def test_a_run_that_only_shares_a_pool_slot_does_not_draft() -> None:
    pool = NgramPool(2, slots=1)  # every run lands in the one slot
    pool.add([1, 2, 3])
    assert pool.propose([1, 2], 4) == [3]
    assert pool.propose([5, 6], 4) == []
    pool.add([5, 6, 7])  # the later run takes the slot
    assert pool.propose([1, 2], 4) == []
    assert pool.propose([5, 6], 4) == [7]


@pytest.mark.parametrize(
    ("history", "min_match", "draft"),
    [
        # this request's own match is 2 tokens, the pool's 3: the pool's draft, as long as
        # max_draft allows (8; the stream's adapted length is 4), up to where the earlier text ends
        ([4, 5, 77, 3, 4, 5], 0, [6, 7, 8, 9, 10]),
        # this request's match is as long as the pool's: its own draft, also max_draft long
        ([3, 4, 5, 99, 3, 4, 5], 0, [99, 3, 4, 5]),
        ([3, 4, 5, 99, 98, 97, 96, 95, 94, 3, 4, 5], 0, [99, 98, 97, 96, 95, 94, 3, 4]),
        # a short match of its own and none in the pool: the adapted length
        ([4, 5, 77, 1, 2, 4, 5], 0, [77, 1, 2, 4]),
        # nothing of its own: the pool's
        ([40, 41, 3, 4, 5], 0, [6, 7, 8, 9, 10]),
        # a crowded step wants 4 tokens: the pool's 3 are not enough, nor its own 2
        ([4, 5, 77, 3, 4, 5], 4, []),
    ],
)
def test_lookup_takes_the_pool_over_a_shorter_match(
    history: list[int], min_match: int, draft: list[int]
) -> None:
    pool = NgramPool(3, slots=64)
    pool.add(EARLIER)
    assert NgramDrafter(S).propose(history, 8, min_match, PoolView(pool)) == draft


# -- the vocabulary rule for a draft model (llama.cpp's common_speculative_are_compatible)

TEXTS = [f"t{i}".encode() for i in range(300)]
BASE = VocabFacts(type=2, add_bos=False, bos=1, add_eos=False, eos=2, n_tokens=300, text=TEXTS.__getitem__)


def facts(**change: object) -> VocabFacts:
    return dataclasses.replace(BASE, **change)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("draft", "problem"),
    [
        (BASE, None),
        # padding: up to 128 tokens more or fewer, the shared ids compared
        (facts(n_tokens=428, text=(TEXTS + [b"pad"] * 128).__getitem__), None),
        (facts(n_tokens=172), None),
        (facts(n_tokens=429, text=(TEXTS + [b"pad"] * 129).__getitem__), "429 tokens"),
        (facts(type=1), "tokenizer type"),
        (facts(add_bos=True), "BOS"),
        (facts(eos=7), None),  # an EOS id that is never added is not compared
        (facts(add_eos=True), "EOS"),
        # ids below 5 (control tokens) may differ; from 5 on every text must be the same
        (facts(text=lambda i: b"other" if i == 4 else TEXTS[i]), None),
        (facts(text=lambda i: b"other" if i == 250 else TEXTS[i]), "token 250"),
    ],
)
def test_vocabulary_rule(draft: VocabFacts, problem: str | None) -> None:
    found = vocab_mismatch(BASE, draft)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


def test_the_eos_id_is_compared_when_both_add_it() -> None:
    target = facts(add_eos=True)
    assert vocab_mismatch(target, facts(add_eos=True)) is None
    found = vocab_mismatch(target, facts(add_eos=True, eos=9))
    assert found is not None and "EOS" in found and "id 9" in found
