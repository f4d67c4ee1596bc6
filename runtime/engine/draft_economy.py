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
        key = _bucket(tokens)
        p = self.points.get(key)
        if p is None:
            self.points[key] = [1.0, float(tokens), seconds, float(self.clock)]
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
        one costs. Past the largest it is taken to cost the same up to twice its size (a step that
        large was not timed lately: let it through, and time it), and to grow along the last two
        points beyond that. None before any step was timed."""
        c = self.curve()
        if not c:
            return None
        if tokens <= c[0][0]:
            return c[0][1]
        for (n0, t0), (n1, t1) in itertools.pairwise(c):
            if tokens <= n1:
                return t0 + (t1 - t0) * (tokens - n0) / (n1 - n0) if n1 > n0 else t1
        (n0, t0), (n1, t1) = c[-2] if len(c) > 1 else c[-1], c[-1]
        return t1 + (t1 - t0) * max(0.0, tokens - 2 * n1) / (n1 - n0) if n1 > n0 else t1

    def extra(self, tokens: int, more: int) -> float:
        """What `more` rows add to a step of `tokens` (0 before anything was timed)."""
        before, after = self.seconds(tokens), self.seconds(tokens + more)
        return 0.0 if before is None or after is None else max(0.0, after - before)

    def spared(self, tokens: int, fewer: int) -> float | None:
        """Seconds per row that a step of `tokens` rows saves with `fewer` rows fewer: what the
        step costs per row when it has no more than `fewer` (the step is saved), else the
        difference of the two sizes. Below the smallest size timed, a step is taken to cost in
        proportion to its rows (as if it had no fixed part: the saving is not underrated where
        nothing smaller was timed). None before any step was timed."""
        whole = self.seconds(tokens)
        if whole is None or tokens <= 0:
            return None
        fewer = min(fewer, tokens)
        rest = tokens - fewer
        smallest, first = self.curve()[0]
        left = first * rest / smallest if rest < smallest else self.seconds(rest) or 0.0
        return max(0.0, whole - left) / fewer


@dataclass
class DraftEconomy:
    """Decides how many tokens of each stream's draft to verify in a step. The j-th token of a draft
    whose tokens are kept at a per-token rate a gives a**j tokens on average (it is kept only if all
    before it were), less, for a draft model, its own time to propose it. The step's drafted tokens
    are taken most likely first, as many as gain most: what the tokens kept spare their streams
    (a step each, a row of the step for the batch), less the seconds they add to the step
    (StepCurve), on condition that the batch as a whole loses no more than 1 % of the step where
    the others' steps go on regardless (see `share`). The count is chosen over the whole step, not
    stream by stream: where one step of 132 rows gives more per second than one of 36 (on a CPU,
    large batches compute more efficiently), all four streams' copies are verified at once."""

    decay: float = 0.99  # per timed step, for the records and the draft model's time
    curve: StepCurve = field(default_factory=StepCurve)
    # kind -> [tokens kept, tokens tried], forgotten step by step, so that a kind not tried for a
    # while is tried again
    record: dict[str, list[float]] = field(default_factory=dict)
    proposing: list[float] = field(default_factory=lambda: [0.0, 0.0])  # draft model: [seconds, tokens]

    def observe_step(self, tokens: int, seconds: float) -> None:
        """A pure decode step of `tokens` rows (streams and drafted tokens) took `seconds`."""
        d = self.decay
        self.curve.observe(tokens, seconds)
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

    def share(self, drafts: list[tuple[str, int]], rows: int, waiting: bool = False) -> list[int]:
        """How many tokens of each draft, given as (kind, length), one per stream, to verify in a
        step of `rows` rows without them (0: none); `waiting`: requests wait for a slot."""
        plain = self.curve.seconds(rows)
        if plain is None or plain <= 0:
            return [length for _, length in drafts]  # nothing measured yet: draft, and learn
        # A kept token spares its stream a later step: the seconds of one step of this size for
        # that stream's user, a row's worth of the step for all of them together. This is the
        # gain chosen for.
        per_row = plain / rows
        # But it does not always spare the batch that much. Where some streams do not draft and
        # no request waits, those streams keep the steps going: the rows kept only make later
        # steps narrower, and no step's fixed part is saved (Gemma 3 270M on 2 cores, in the
        # server: about 6.4 ms a row so, against 7.2 a row of a whole step of 16). The count
        # chosen must not cost the batch more than `_BATCH_SLACK` of the step on that count: on a
        # GPU, where a drafted row costs next to nothing, a stream that copies still drafts when
        # the others do not; on a CPU, one stream of 16 does not verify drafts a tenth of which
        # fail.
        drafting = rows if waiting else sum(1 for _, length in drafts if length > 0)
        batch_row = self.curve.spared(rows, max(1, drafting)) or 0.0
        spent, proposed = self.proposing
        toll = spent / proposed if proposed > 0 else 0.0  # a draft model's seconds per token
        # (worth in seconds, position in its draft, draft, chance it is kept, proposing toll)
        tokens: list[tuple[float, int, int, float, float]] = []
        for i, (kind, length) in enumerate(drafts):
            a = min(self.rate(kind), 0.999)
            cost = toll if kind == DRAFT else 0.0
            chance = 1.0
            for j in range(length):
                chance *= a
                if chance * per_row <= cost:
                    break  # the later tokens of this draft are worth less still
                tokens.append((chance * per_row - cost, j, i, chance, cost))
        # most likely first; of equals, the earlier positions, so that streams share alike
        tokens.sort(key=lambda t: (-t[0], t[1]))
        best, best_gain, worth, kept, tolls = 0, 0.0, 0.0, 0.0, 0.0
        for k, (value, _, _, chance, cost) in enumerate(tokens, 1):
            worth, kept, tolls = worth + value, kept + chance, tolls + cost
            if k in _COUNTS or k == len(tokens):
                extra = self.curve.extra(rows, k)
                gain = worth - extra
                batch = kept * batch_row - tolls - extra
                if gain > best_gain and batch >= -_BATCH_SLACK * plain:
                    best, best_gain = k, gain
        counts = [0] * len(drafts)
        for _, _, i, _, _ in tokens[:best]:
            counts[i] += 1
        return counts


# what a step's drafts may cost the whole batch, as a share of the step's time, where they gain
# their own streams more (DraftEconomy.share)
_BATCH_SLACK = 0.01

# The numbers of drafted tokens a step tries: 1, 2, 3, 4, 6, 8, 12, 16, ... (the gain is smooth in
# the count; trying every one would cost a millisecond at 16 streams)
_COUNTS = frozenset(m << i for i in range(16) for m in (2, 3)) | {1}
