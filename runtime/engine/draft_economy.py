"""How much of a draft is worth verifying on this machine, learned from the steps themselves.

A drafted token lengthens the step's batch, and so its time, and gives one more token if the
target model keeps it. Whether that raises the tokens per second depends on the hardware and the
batch: on a GPU a step of 40 tokens takes about as long as one of 8 (the read of the weights
dominates) and any likely draft pays; on a CPU every token in the batch costs compute, and only
nearly certain drafts pay. Both sides are measured while serving: `StepCurve`, the seconds of a
decode step as a function of the tokens in its batch, and per kind of draft how much of it the
target model kept."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from hermesd.runtime.engine.speculation import COPY_RUN, DRAFT, NGRAM

# Kinds of draft, each with its own record of how much of it the target model keeps: a lookup
# that matched a long run is copying text and is nearly always kept, one that matched two tokens
# is a guess.
COPY = f"{NGRAM}:copy"  # a lookup that matched COPY_RUN tokens
RUN = f"{NGRAM}:run"  # one that matched RUN_MATCH to COPY_RUN - 1
GUESS = f"{NGRAM}:guess"  # a shorter match
RUN_MATCH = 8

# what each kind is expected to keep per token before anything is measured (worth PRIOR_WEIGHT
# tokens of evidence): enough that a kind is tried where drafts are cheap, and the few tokens tried
# teach the rest
KIND_PRIOR = {COPY: 0.9, RUN: 0.75, GUESS: 0.5, DRAFT: 0.6}
PRIOR_WEIGHT = 4.0


def draft_kind(source: str, matched: int) -> str:
    """The kind of a draft from `source` whose run matched `matched` tokens (lookups)."""
    if source != NGRAM:
        return source
    return COPY if matched >= COPY_RUN else RUN if matched >= RUN_MATCH else GUESS


def _bucket(tokens: int) -> int:
    """Batch sizes a factor of about 1.4 apart share a point of the curve (1, 2, 3, 4-5, 6-7, 8-11,
    ...): close enough to interpolate between, far enough apart that the difference of two points
    is more than the noise of one step's time."""
    return int(2 * math.log2(max(1, tokens)))


@dataclass
class StepCurve:
    """The seconds a decode step takes as a function of the tokens in its batch: one point per
    bucket of batch sizes (the mean size and the mean seconds of the steps timed there), with
    exponential forgetting, so that the curve follows the cache as it fills and a point not
    measured for a long while is dropped.

    Pure decode steps of any mix teach it: 16 streams without drafts and 4 streams with 12 drafted
    tokens each are both a batch of 16 rows whose logits are all read. So what a draft adds at 16
    streams may be known from drafts at 4."""

    decay: float = 0.99  # per timed step
    forget: float = 0.05  # a point whose weight fell below this is dropped
    clock: int = 0  # timed steps so far
    # bucket -> [weight at `last`, mean tokens, mean seconds, last]
    points: dict[int, list[float]] = field(default_factory=dict)
    _curve: list[tuple[float, float]] | None = None  # the points now, by size; until the next step

    def observe(self, tokens: int, seconds: float) -> None:
        self.clock += 1
        self._curve = None
        p = self.points.get(_bucket(tokens))
        if p is None:
            self.points[_bucket(tokens)] = [1.0, float(tokens), seconds, float(self.clock)]
            return
        w = p[0] * self.decay ** (self.clock - p[3])
        p[1] = (p[1] * w + tokens) / (w + 1)
        p[2] = (p[2] * w + seconds) / (w + 1)
        p[0], p[3] = w + 1, float(self.clock)

    def curve(self) -> list[tuple[float, float]]:
        """(tokens, seconds) of the points still remembered, by size, the seconds made to never
        fall as the batch grows (a larger batch costs no less; a dip is noise)."""
        if self._curve is None:
            for key, p in list(self.points.items()):
                if p[0] * self.decay ** (self.clock - p[3]) < self.forget:
                    del self.points[key]
            out: list[tuple[float, float]] = []
            for p in sorted(self.points.values(), key=lambda p: p[1]):
                out.append((p[1], max(p[2], out[-1][1]) if out else p[2]))
            self._curve = out
        return self._curve

    def seconds(self, tokens: float) -> float | None:
        """A step of `tokens` rows, interpolated between the points; below the smallest, what that
        one costs; past the largest, extended along the last two (with one point, flat: a draft
        larger than anything timed is let through, and measures it). None before any step."""
        c = self.curve()
        if not c:
            return None
        if tokens <= c[0][0]:
            return c[0][1]
        for (n0, t0), (n1, t1) in itertools.pairwise(c):
            if tokens <= n1:
                return t0 + (t1 - t0) * (tokens - n0) / (n1 - n0) if n1 > n0 else t1
        if len(c) == 1:
            return c[0][1]
        (n0, t0), (n1, t1) = c[-2], c[-1]
        return t1 + (t1 - t0) * (tokens - n1) / (n1 - n0)

    def extra(self, tokens: int, more: int) -> float:
        """What `more` rows add to a step of `tokens` (0 before anything was timed)."""
        before, after = self.seconds(tokens), self.seconds(tokens + more)
        return 0.0 if before is None or after is None else max(0.0, after - before)


@dataclass
class DraftEconomy:
    """Decides how many tokens of each draft to verify. Verifying `c` tokens of a draft whose tokens
    are kept at a per-token rate a gives a + a**2 + ... + a**c tokens more on average (the j-th is
    kept only if all before it were) and costs the seconds they add to the step, which, at the
    tokens per second steps give now, is what those seconds would give otherwise. The count with
    the largest gain is taken, 0 when none gains. A draft model's own time per proposed token is
    added to the cost of its drafts."""

    decay: float = 0.99  # per timed step, for the rate, the records and the draft model's time
    curve: StepCurve = field(default_factory=StepCurve)
    given: float = 0.0  # tokens steps gave, decayed
    seconds: float = 0.0  # and the seconds they took
    # kind -> [tokens kept, tokens tried], forgotten step by step, so that a kind not tried for a
    # while is tried again
    record: dict[str, list[float]] = field(default_factory=dict)
    proposing: list[float] = field(default_factory=lambda: [0.0, 0.0])  # draft model: [seconds, tokens]

    def observe_step(self, tokens: int, seconds: float, given: int) -> None:
        """A pure decode step of `tokens` rows (streams and drafted tokens) took `seconds` and gave
        `given` tokens to its streams."""
        d = self.decay
        self.curve.observe(tokens, seconds)
        self.given = self.given * d + given
        self.seconds = self.seconds * d + seconds
        for rec in (*self.record.values(), self.proposing):
            rec[0] *= d
            rec[1] *= d

    def observe_draft(self, kind: str, drafted: int, kept: int) -> None:
        """The target model kept `kept` of a `kind` draft of `drafted` tokens."""
        rec = self.record.setdefault(kind, [0.0, 0.0])
        rec[0] += kept
        rec[1] += kept + (1 if kept < drafted else 0)

    def observe_proposing(self, tokens: int, seconds: float) -> None:
        """The draft model took `seconds` to propose `tokens` tokens (for all streams)."""
        self.proposing[0] += seconds
        self.proposing[1] += tokens

    def rate(self, kind: str) -> float:
        """The per-token chance a that a `kind` draft's next token is kept: its record, with the
        kind's prior."""
        kept, tried = self.record.get(kind, (0.0, 0.0))
        return (kept + PRIOR_WEIGHT * KIND_PRIOR.get(kind, 0.5)) / (tried + PRIOR_WEIGHT)

    def worth(self, kind: str, length: int, batch: int) -> int:
        """How many of `length` drafted tokens of `kind` are worth verifying in a step whose batch
        holds `batch` rows so far (0: none)."""
        if length <= 0:
            return 0
        if self.seconds <= 0:
            return length  # nothing measured yet: draft, and learn
        speed = self.given / self.seconds  # tokens per second, which the added seconds forgo
        a = min(self.rate(kind), 0.999)
        spent, proposed = self.proposing
        per_proposed = spent / proposed if kind == DRAFT and proposed > 0 else 0.0
        best, best_gain = 0, 0.0
        for c in _counts(length):
            gain = a * (1 - a**c) / (1 - a) - speed * (self.curve.extra(batch, c) + c * per_proposed)
            if gain > best_gain:
                best, best_gain = c, gain
        return best


def _counts(length: int) -> list[int]:
    """The counts tried for a draft of `length` tokens: powers of two and the whole (the gain is
    smooth in the count; trying every one would cost a step's time at 16 streams)."""
    out = [1 << i for i in range(length.bit_length()) if 1 << i < length]
    return [*out, length]
