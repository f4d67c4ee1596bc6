"""DraftEconomy and StepCurve (runtime/engine/draft_economy.py): how much of a draft is worth
verifying, from the measured seconds of a step as its batch grows and how much of earlier drafts of
its kind was kept."""

from __future__ import annotations

import math

import pytest

from hermesd.runtime.engine.draft_economy import (
    COPY,
    GUESS,
    RUN,
    DraftEconomy,
    StepCurve,
    draft_kind,
)
from hermesd.runtime.engine.speculation import DRAFT, NGRAM

# what one step of n rows takes: a GPU reads the weights once whatever the batch (rows cost
# little beside it); a CPU computes every row
GPU = (0.020, 0.00005)
CPU = (0.010, 0.004)


def timed(machine: tuple[float, float], steps: list[tuple[int, int]], rounds: int = 5) -> DraftEconomy:
    """An economy that timed `steps` of (streams, drafted tokens) on `machine`, each step giving
    one token per stream plus half its draft."""
    fixed, per_row = machine
    e = DraftEconomy()
    for _ in range(rounds):
        for streams, drafted in steps:
            rows = streams + drafted
            e.observe_step(rows, fixed + per_row * rows, streams + drafted // 2)
    return e


MIXED = [(s, d) for s in (1, 2, 4) for d in (0, 4, 16, 32)]


def test_the_curve_interpolates_the_steps_timed() -> None:
    fixed, per_row = CPU
    c = StepCurve()
    for _ in range(3):
        for n in (1, 2, 4, 8, 16, 32, 64):
            c.observe(n, fixed + per_row * n)
    assert c.seconds(24) == pytest.approx(fixed + per_row * 24)
    assert c.extra(16, 12) == pytest.approx(per_row * 12)
    assert c.extra(16, 0) == 0


def test_steps_of_sizes_close_together_share_a_point() -> None:
    c = StepCurve()
    for n in (16, 18, 20, 22):
        c.observe(n, n / 1000)
    assert c.curve() == [(pytest.approx(19, rel=0.01), pytest.approx(0.019, rel=0.01))]


def test_before_anything_is_timed_a_draft_costs_nothing_and_past_the_largest_step_the_curve_goes_on() -> None:
    c = StepCurve()
    assert c.seconds(8) is None
    assert c.extra(8, 8) == 0  # unmeasured: let it through, and measure it
    c.observe(16, 0.088)
    assert c.extra(16, 32) == 0  # one size timed: nothing to tell a larger one by
    c.observe(32, 0.152)
    assert c.extra(16, 32) == pytest.approx(0.004 * 32)  # along the last two points
    assert c.seconds(2) == 0.088  # and below the smallest, what that one costs


def test_the_curve_never_falls_as_the_batch_grows() -> None:
    # a step that happened to run fast (noise) does not make a larger batch look cheaper
    c = StepCurve()
    for n, t in ((4, 0.040), (8, 0.030), (16, 0.080)):
        c.observe(n, t)
    assert [t for _, t in c.curve()] == [0.040, 0.040, 0.080]
    assert c.extra(4, 4) == 0


def test_the_curve_follows_the_steps_and_drops_a_point_not_measured_for_long() -> None:
    c = StepCurve()
    c.observe(32, 0.200)
    for _ in range(50):
        c.observe(32, 0.100)
    assert c.seconds(32) == pytest.approx(0.100, rel=0.05)
    for _ in range(800):  # its weight, about 40, times 0.99 ** 800 < 0.05: it is forgotten
        c.observe(4, 0.030)
    assert [round(n) for n, _ in c.curve()] == [4]


@pytest.mark.parametrize(
    "machine, keep, rows, least, most",
    [
        # a GPU: a drafted row costs little beside the step; a draft nearly always kept is
        # verified whole, and even one mostly rejected for a token or two
        (GPU, 0.99, 1, 32, 32),
        (GPU, 0.99, 16, 32, 32),
        (GPU, 0.4, 4, 1, 8),
        # a CPU: a drafted row costs about what a stream's does; a draft mostly rejected does not
        # pay, one nearly always kept does for a part
        (CPU, 0.4, 1, 0, 0),
        (CPU, 0.4, 16, 0, 0),
        (CPU, 0.99, 1, 4, 32),
    ],
)
def test_what_is_worth_verifying_follows_the_measured_cost(
    machine: tuple[float, float], keep: float, rows: int, least: int, most: int
) -> None:
    e = timed(machine, MIXED)
    e.record[RUN] = [keep * 1000, 1000.0]
    assert least <= e.worth(RUN, 32, rows) <= most


def test_what_a_draft_adds_at_many_streams_is_known_from_drafts_at_few() -> None:
    # steps of 4 streams drafting up to 48 rows teach what 12 drafted rows add to 16 streams; the
    # steps of 16 streams alone never drafted
    e = timed(CPU, [(4, d) for d in (0, 8, 16, 24, 32, 48)] + [(16, 0)] * 6)
    assert e.curve.extra(16, 12) == pytest.approx(12 * CPU[1], rel=0.15)
    for _ in range(40):
        e.observe_draft(COPY, 12, 12)  # copies that were always kept
    assert e.worth(COPY, 12, 16) == 12
    for _ in range(40):
        e.observe_draft(RUN, 12, 1)  # runs that were mostly not
    assert e.worth(RUN, 12, 16) == 0


def test_nothing_measured_drafts_in_full_and_learns() -> None:
    e = DraftEconomy()
    assert e.worth(GUESS, 12, 4) == 12
    assert e.worth(GUESS, 0, 4) == 0


def test_a_kind_that_keeps_its_drafts_earns_longer_ones_and_one_that_fails_none() -> None:
    e = timed((0.010, 0.002), MIXED)
    before = e.worth(RUN, 32, 1)
    for _ in range(30):
        e.observe_draft(RUN, 8, 8)
    assert e.worth(RUN, 32, 1) > before
    for _ in range(30):
        e.observe_draft(GUESS, 8, 0)
    assert e.worth(GUESS, 32, 1) == 0


def test_a_kind_not_tried_for_a_while_is_judged_by_its_prior_again() -> None:
    # failed drafts are forgotten step by step, so a kind that once failed is tried again later
    e = timed((0.010, 0.0005), MIXED)
    fresh = e.worth(GUESS, 32, 1)
    for _ in range(30):
        e.observe_draft(GUESS, 8, 0)
    assert e.worth(GUESS, 32, 1) < fresh
    for _ in range(2000):
        e.observe_step(4, 0.012, 4)
    assert e.rate(GUESS) == pytest.approx(0.5, abs=1e-3)


def test_the_draft_models_own_time_is_part_of_what_its_drafts_cost() -> None:
    e = timed(GPU, MIXED)
    e.record[DRAFT] = [990.0, 1000.0]
    free = e.worth(DRAFT, 16, 4)
    e.observe_proposing(16, 16 * 0.004)  # 4 ms per proposed token: as dear as a CPU row
    assert free == 16 and e.worth(DRAFT, 16, 4) < free
    assert e.worth(COPY, 16, 4) == 16  # lookups cost no proposing


@pytest.mark.parametrize("keep", [0.6, 0.8, 0.9, 0.95])
def test_the_count_taken_is_where_the_next_token_stops_paying(keep: float) -> None:
    # on a machine where each row adds `per_row` seconds, one more token of a draft whose tokens
    # are kept at rate a pays while a**c > per_row * tokens per second: the count taken is within
    # the powers of two around that c
    e = timed(CPU, MIXED)
    for _ in range(200):
        e.observe_draft(RUN, 10, 0)  # forget the prior
    e.record[RUN] = [keep * 1000, 1000.0]
    bar = CPU[1] * e.given / e.seconds
    if keep <= bar:
        assert e.worth(RUN, 64, 1) <= 1
        return
    best = math.log(bar) / math.log(keep)
    assert best / 2 <= e.worth(RUN, 64, 1) <= 2 * best + 1


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
