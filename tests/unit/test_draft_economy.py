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
    """An economy that timed `steps` of (streams, drafted tokens) on `machine`."""
    fixed, per_row = machine
    e = DraftEconomy()
    for _ in range(rounds):
        for streams, drafted in steps:
            rows = streams + drafted
            e.observe_step(rows, fixed + per_row * rows)
    return e


def worth(e: DraftEconomy, kind: str, length: int, rows: int) -> int:
    """How many tokens of one draft `e` verifies in a step of `rows` rows."""
    return e.share([(kind, length)], rows)[0]


MIXED = [(s, d) for s in (1, 2, 4) for d in (0, 4, 16, 32)]
WIDE = [*MIXED, (4, 64), (4, 128)]  # every size a step of up to 4 streams drafting 64 can reach


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


def test_before_anything_is_timed_or_past_the_largest_step_drafts_are_let_through_to_be_timed() -> None:
    c = StepCurve()
    assert c.seconds(8) is None
    assert c.extra(8, 8) == 0  # unmeasured: let it through, and time it
    c.observe(16, 0.088)
    assert c.extra(16, 32) == 0  # one size timed: nothing to tell a larger one by
    c.observe(32, 0.152)
    # up to twice the largest size timed, a step costs what that one did; beyond, the curve goes
    # on along its last two points
    assert c.extra(32, 32) == 0
    assert c.extra(32, 40) == pytest.approx(0.004 * 8)
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
        # a CPU: a drafted row costs about what a stream's does. At one stream the step's fixed
        # part still dominates (10 ms beside 4 per row) and a token kept 4 times in 10 pays; at 16
        # streams it does not, nor one kept 2 times in 10 at one; one nearly always kept pays in part
        (CPU, 0.4, 1, 1, 2),
        (CPU, 0.2, 1, 0, 0),
        (CPU, 0.4, 16, 0, 0),
        (CPU, 0.99, 1, 4, 32),
    ],
)
def test_what_is_worth_verifying_follows_the_measured_cost(
    machine: tuple[float, float], keep: float, rows: int, least: int, most: int
) -> None:
    e = timed(machine, MIXED)
    e.record[RUN] = [keep * 1000, 1000.0]
    assert least <= worth(e, RUN, 32, rows) <= most


def test_what_a_draft_adds_at_many_streams_is_known_from_drafts_at_few() -> None:
    # steps of 4 streams drafting up to 48 rows teach what 12 drafted rows add to 16 streams; the
    # steps of 16 streams alone never drafted
    e = timed(CPU, [(4, d) for d in (0, 8, 16, 24, 32, 48)] + [(16, 0)] * 6)
    assert e.curve.extra(16, 12) == pytest.approx(12 * CPU[1], rel=0.15)
    for _ in range(40):
        e.observe_draft(COPY, 12, 12)  # copies that were always kept
    assert worth(e, COPY, 12, 16) == 12
    for _ in range(40):
        e.observe_draft(RUN, 12, 1)  # runs that were mostly not
    assert worth(e, RUN, 12, 16) == 0


def served(points: list[tuple[int, float]]) -> DraftEconomy:
    """An economy whose curve holds `points` (rows, seconds)."""
    e = DraftEconomy()
    for rows, t in points:
        for _ in range(20):
            e.observe_step(rows, t)
    return e


# what Gemma 3 270M's steps took in the server on 2 cores (2026-12-03): per row a batch of 132 rows
# computes more cheaply than one of 36
GEMMA_IN_SERVER = [(4, 0.040), (9, 0.099), (18, 0.131), (36, 0.329), (78, 0.640), (132, 0.761)]


def test_the_count_is_chosen_for_the_whole_step() -> None:
    # streams copying: one stream's whole 32 tokens (a step of 36 rows) cost more than they give,
    # four streams' (132 rows), at a lower cost per row, give more
    e = served(GEMMA_IN_SERVER)
    for _ in range(40):
        e.observe_draft(COPY, 32, 32)
    assert e.share([(COPY, 32)], 4)[0] < 32
    assert e.share([(COPY, 32)] * 4, 4) == [32] * 4


def test_what_fewer_rows_spare_a_step() -> None:
    fixed, per_row = 0.040, 0.004
    c = StepCurve()
    for _ in range(3):
        for rows in (4, 8, 16, 32):
            c.observe(rows, fixed + per_row * rows)
    assert c.spared(16, 16) == pytest.approx((fixed + 16 * per_row) / 16)  # the whole step
    assert c.spared(16, 20) == c.spared(16, 16)
    assert c.spared(16, 4) == pytest.approx(per_row)  # a narrower one: its rows only
    # below the smallest size timed, in proportion to the rows (as if there were no fixed part)
    assert c.spared(8, 6) == pytest.approx(((fixed + 8 * per_row) - (fixed + 4 * per_row) / 2) / 6)
    assert StepCurve().spared(8, 1) is None


# a CPU on which a step has a large fixed part: at 16 rows, 6.5 ms a row of a whole step, 4 ms a
# row added or taken away
FIXED_CPU = (0.040, 0.004)


def test_one_stream_of_many_drafts_only_what_the_batch_can_afford() -> None:
    e = timed(FIXED_CPU, [(s, d) for s in (1, 4, 8, 15, 16) for d in (0, 4, 16, 32, 64, 128)])
    e.record[RUN] = [900.0, 1000.0]
    # one stream of 16 drafts and nothing waits: the other 15 keep the steps going, its kept
    # tokens spare 4 ms a row and cost 4, so the batch would lose on all but what 1 % of the step
    # allows. Where requests wait for a slot, a kept token spares a row of a whole step (6.5 ms):
    # tokens kept at least 4/6.5 of the time pay, 0.9**4 = 0.66
    assert e.share([(RUN, 16)], 16) == [1]
    assert e.share([(RUN, 16)], 16, waiting=True) == [4]
    # every stream drafts: they finish in fewer steps, as where requests wait
    alone, together = e.share([(RUN, 16)], 8)[0], e.share([(RUN, 16)] * 8, 8)
    assert alone <= 1 and min(together) >= 4, (alone, together)


def test_on_a_gpu_a_stream_that_copies_drafts_while_the_others_do_not() -> None:
    # a drafted row costs next to nothing there: the copying stream goes faster, the others lose
    # less than 1 % of a step
    e = timed(GPU, MIXED)
    e.record[COPY] = [990.0, 1000.0]
    assert e.share([(COPY, 16)], 4) == [16]


def test_the_most_likely_tokens_are_taken_first_and_alike_drafts_share_alike() -> None:
    e = timed(CPU, WIDE)
    e.record[COPY] = [990.0, 1000.0]
    e.record[GUESS] = [300.0, 1000.0]
    counts = e.share([(GUESS, 16), (COPY, 16), (COPY, 16), (GUESS, 16)], 4)
    assert counts[0] == counts[3] == 0 < counts[1] == counts[2]


def test_nothing_measured_drafts_in_full_and_learns() -> None:
    e = DraftEconomy()
    assert worth(e, GUESS, 12, 4) == 12
    assert worth(e, GUESS, 0, 4) == 0


def test_a_kind_that_keeps_its_drafts_earns_longer_ones_and_one_that_fails_none() -> None:
    e = timed((0.010, 0.002), MIXED)
    before = worth(e, RUN, 32, 1)
    for _ in range(30):
        e.observe_draft(RUN, 8, 8)
    assert worth(e, RUN, 32, 1) > before
    for _ in range(30):
        e.observe_draft(GUESS, 8, 0)
    assert worth(e, GUESS, 32, 1) == 0


def test_a_kind_not_tried_for_a_while_is_judged_by_its_prior_again() -> None:
    # failed drafts are forgotten step by step, so a kind that once failed is tried again later
    e = timed((0.010, 0.0005), MIXED)
    fresh = worth(e, GUESS, 32, 1)
    for _ in range(30):
        e.observe_draft(GUESS, 8, 0)
    assert worth(e, GUESS, 32, 1) < fresh
    for _ in range(2000):
        e.observe_step(4, 0.012)
    assert e.rate(GUESS) == pytest.approx(0.5, abs=1e-3)


def test_the_draft_models_own_time_is_part_of_what_its_drafts_cost() -> None:
    e = timed(GPU, MIXED)
    e.record[DRAFT] = [990.0, 1000.0]
    free = worth(e, DRAFT, 16, 4)
    # 8 ms per proposed token, where the target gives 4 streams a token each in 20 ms: each
    # token costs more than it gives
    e.observe_proposing(16, 16 * 0.008)
    assert free == 16 and worth(e, DRAFT, 16, 4) == 0
    e.record[COPY] = [990.0, 1000.0]
    assert worth(e, COPY, 16, 4) == 16  # lookups cost no proposing


@pytest.mark.parametrize("keep", [0.6, 0.8, 0.9, 0.95])
def test_the_count_taken_is_where_the_next_token_stops_paying(keep: float) -> None:
    # on a machine where each row adds `per_row` seconds, one more token of a draft whose tokens
    # are kept at rate a pays while a**c > per_row * the tokens per second of the step without
    # drafts: the count taken is within the powers of two around that c
    e = timed(CPU, WIDE)
    e.record[RUN] = [keep * 1000, 1000.0]
    bar = CPU[1] * 1 / (CPU[0] + CPU[1] * 1)  # at one stream
    if keep <= bar:
        assert worth(e, RUN, 64, 1) <= 1
        return
    best = math.log(bar) / math.log(keep)
    assert best / 2 <= worth(e, RUN, 64, 1) <= 2 * best + 1


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
