"""Speculative decoding: where draft tokens come from, and how long a draft should be.

One read of all the weights gives one token per stream; verifying k drafted tokens costs about
the same read, so a stream that guesses right advances k+1 tokens per step. The scheduler owns
the verification (runtime/engine/scheduler.py); this module owns the drafts.

The rule that keeps the output exactly the target model's: every drafted position is *sampled*
with the request's own sampler chain, and a draft token is kept only while the sample equals
it. Drafts here are a deterministic function of the text so far, so that rule is the standard
rejection rule for a point-mass proposal (accept x with probability p(x); on rejection the
sample already drawn is distributed as p without x): greedy output is identical, sampled output
has the target's distribution, and with a fixed seed it is the same text as without speculation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Sources of drafts, as /metrics labels them.
NGRAM = "ngram"


@dataclass(frozen=True)
class SpeculationSettings:
    ngram: bool = False
    # draft lengths: a stream starts at `start` and moves between 1 and `max_draft` with its
    # acceptance; a longer draft wastes more compute when it is wrong (the CPU pays for it)
    max_draft: int = 32
    start: int = 8
    # n-gram sizes tried, longest first: a 4-token match predicts better than a 2-token one
    ngram_max: int = 4
    ngram_min: int = 2
    # a stream whose drafts keep failing stops drafting for `pause` tokens, then tries again
    misses_before_pause: int = 4
    pause: int = 32
    # no drafts in a step that decodes more streams than this (generating or reading a prompt)
    max_streams: int = 4

    @property
    def enabled(self) -> bool:
        return self.ngram


@dataclass
class NgramDrafter:
    """Drafts for one sequence by prompt lookup: find the latest earlier occurrence of the last
    few tokens in the prompt and output so far, and propose what followed it.

    The index maps each n-gram to the position just after its latest occurrence and grows by
    one position per token, so a lookup costs the same at 100 tokens of history as at 30 000."""

    settings: SpeculationSettings
    index: dict[tuple[int, ...], int] = field(default_factory=dict)
    indexed: int = 0  # n-grams ending before this position are in the index
    length: int = 0
    misses: int = 0
    paused: int = 0

    def __post_init__(self) -> None:
        self.length = self.settings.start

    def propose(self, history: list[int], limit: int) -> list[int]:
        """Up to `limit` tokens that may follow `history`; [] when nothing matches."""
        s = self.settings
        if limit <= 0:
            return []
        if self.paused > 0:
            self.paused -= 1
            return []
        end = len(history)
        # index every n-gram that ends before the last token, so the suffix never matches itself
        for pos in range(max(self.indexed, s.ngram_min), end):
            for n in range(s.ngram_min, min(s.ngram_max, pos) + 1):
                self.index[tuple(history[pos - n : pos])] = pos
        self.indexed = max(self.indexed, end)
        for n in range(min(s.ngram_max, end - 1), s.ngram_min - 1, -1):
            after = self.index.get(tuple(history[end - n :]))
            if after is not None and after < end:
                return history[after : after + min(self.length, limit)]
        return []

    def update(self, drafted: int, accepted: int) -> None:
        """Adapt to how much of the last draft the target model kept."""
        if drafted == 0:
            return
        s = self.settings
        if accepted == drafted:
            self.length = min(s.max_draft, self.length * 2)
            self.misses = 0
        elif accepted == 0:
            self.length = max(1, self.length // 2)
            self.misses += 1
            if self.misses >= s.misses_before_pause:
                self.misses = 0
                self.paused = s.pause
        else:
            self.length = max(1, accepted + 1)
            self.misses = 0
