"""DraftEconomy (runtime/engine/speculation.py): how much of a draft is worth verifying, from the
measured cost of a drafted token in a step and how much of earlier drafts of its kind was kept."""

from __future__ import annotations

import math

import pytest

from hermesd.runtime.engine.speculation import DRAFT, NGRAM, DraftEconomy, draft_kind

COPY, RUN, GUESS = f"{NGRAM}:copy", f"{NGRAM}:run", f"{NGRAM}:guess"


def timed(fixed: float, per_stream: float, per_draft: float, steps: list[tuple[int, int]]) -> DraftEconomy:
    """An economy that timed `steps` of (streams, drafted tokens), each giving one token per
    stream plus half its draft, on a machine whose step takes fixed + per_stream * streams +
    per_draft * drafted seconds."""
    e = DraftEconomy()
    for streams, drafted in steps:
        e.observe_step(
            streams, drafted, fixed + per_stream * streams + per_draft * drafted, streams + drafted // 2
        )
    return e


MIXED = [(s, d) for s in (1, 2, 4) for d in (0, 4, 16, 32)] * 5


@pytest.mark.parametrize(
    "steps, expected",
    [
        ([], None),  # nothing timed
        ([(4, 0)] * 50, None),  # never a draft: its cost cannot be told from the streams'
        ([(1, 8)] * 50, None),  # always the same draft: nor here
        (MIXED, 0.004),
    ],
)
def test_the_cost_of_a_drafted_token_is_fitted_once_drafts_of_several_sizes_were_timed(
    steps: list[tuple[int, int]], expected: float | None
) -> None:
    e = timed(0.010, 0.002, 0.004, steps)
    if expected is None:
        assert e.per_token is None
    else:
        assert e.per_token == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "per_draft, kind, least, most",
    [
        # a GPU-like machine: a drafted token costs little beside the step; every likely draft pays
        (0.00005, COPY, 32, 32),
        (0.00005, GUESS, 4, 31),  # even a guess, for a few tokens
        # a CPU-like machine: a drafted token costs about what a stream's token does; only drafts
        # that are nearly certain pay, and not all of a long one
        (0.004, GUESS, 0, 0),
        (0.004, COPY, 1, 31),
    ],
)
def test_what_is_worth_verifying_follows_the_measured_cost(
    per_draft: float, kind: str, least: int, most: int
) -> None:
    e = timed(0.010, 0.002, per_draft, MIXED)
    assert least <= e.worth(kind, 32) <= most
    assert 0 < e.bar() < 1


def test_nothing_measured_drafts_in_full_and_learns() -> None:
    e = DraftEconomy()
    assert e.bar() == 0
    assert e.worth(GUESS, 12) == 12
    assert e.worth(GUESS, 0) == 0


def test_a_kind_that_keeps_its_drafts_earns_longer_ones_and_one_that_fails_none() -> None:
    e = timed(0.010, 0.002, 0.003, MIXED)
    before = e.worth(RUN, 32)
    for _ in range(30):
        e.observe_draft(RUN, 8, 8)
    assert e.worth(RUN, 32) > before
    for _ in range(30):
        e.observe_draft(GUESS, 8, 0)
    assert e.worth(GUESS, 32) == 0


def test_a_kind_not_tried_for_a_while_is_judged_by_its_prior_again() -> None:
    # failed drafts are forgotten step by step, so a kind that once failed is tried again later
    e = timed(0.010, 0.002, 0.0005, MIXED)
    fresh = e.worth(GUESS, 32)
    for _ in range(30):
        e.observe_draft(GUESS, 8, 0)
    assert e.worth(GUESS, 32) < fresh
    for _ in range(2000):
        e.observe_step(4, 0, 0.018, 4)
    assert fresh > 0 and e.worth(GUESS, 32) == int(math.log(e.bar()) / math.log(0.5))


def test_the_bar_is_the_cost_of_a_token_times_the_rate_steps_give() -> None:
    e = timed(0.010, 0.002, 0.004, MIXED)
    assert e.per_token is not None
    assert e.bar() == pytest.approx(e.per_token * e.given / e.seconds)
    # and the length is the longest j whose chance rate**j clears it
    rate = 4 * 0.9 / 4  # a copy draft before any is measured
    assert e.worth(COPY, 64) == int(math.log(e.bar()) / math.log(rate))


@pytest.mark.parametrize(
    "source, matched, kind",
    [
        (NGRAM, 2, GUESS),
        (NGRAM, 7, GUESS),
        (NGRAM, 8, RUN),
        (NGRAM, 15, RUN),
        (NGRAM, 16, COPY),
        (DRAFT, 0, DRAFT),
    ],
)
def test_draft_kinds(source: str, matched: int, kind: str) -> None:
    assert draft_kind(source, matched) == kind
