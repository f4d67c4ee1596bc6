"""Speculative decoding: where draft tokens come from, and how long a draft should be.

One read of all the weights gives one token per stream; verifying k drafted tokens costs about
the same read, so a stream that guesses right advances k+1 tokens per step. The scheduler owns
the verification (runtime/engine/scheduler.py); this module owns the drafts: n-gram lookup here,
a small draft model in runtime/engine/draft_model.py, and the rule for whether a draft model's
vocabulary is the target's.

The rule that keeps the output exactly the target model's: every drafted position is *sampled*
with the request's own sampler chain, and a draft token is kept only while the sample equals
it. Drafts of both sources are a deterministic function of the text so far (the draft model drafts
greedily), so that rule is the standard
rejection rule for a point-mass proposal (accept x with probability p(x); on rejection the
sample already drawn is distributed as p without x): greedy output is identical, sampled output
has the target's distribution. (A fixed seed reproduces a reply, but need not give the text it gives
without speculation: llama.cpp's kernels give a token decoded in a batch of several slightly other
logits than the same token alone, which can move a sample that lies near a boundary.)
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

# Sources of drafts, as /metrics labels them.
NGRAM = "ngram"
DRAFT = "draft"


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
    # a step that decodes more streams than this (generating or reading a prompt) is crowded: the
    # batch keeps the hardware busy already, so a wrong draft costs more than a right one saves
    max_streams: int = 4
    # in a crowded step only a stream whose last `crowded_match` tokens occurred before drafts (by
    # lookup; the draft model waits): it is copying text, where drafts are nearly always kept. This
    # is llama-server's ngram-simple rule (a 12-token lookup). 0: no drafts in a crowded step.
    crowded_match: int = 12
    # lookup also searches the text of earlier requests (NgramPool) where the last `pool_match`
    # tokens occurred there; 0: only the request's own text
    pool_match: int = 16
    # verify only the drafted tokens that the steps measured here say pay for themselves
    # (DraftEconomy); off, every draft the adaptive length allows is verified
    priced: bool = True


@dataclass
class DraftLength:
    """How long the next draft of one stream from one source may be: it starts at `start`, and
    follows how much of the last draft the target model kept; a source whose drafts keep failing
    pauses for a while, then tries again."""

    settings: SpeculationSettings
    length: int = 0
    misses: int = 0
    paused: int = 0

    def __post_init__(self) -> None:
        self.length = self.settings.start

    def budget(self, limit: int) -> int:
        """Tokens to draft now (0: none), at most `limit`."""
        if limit <= 0:
            return 0
        if self.paused > 0:
            self.paused -= 1
            return 0
        return min(self.length, limit)

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


@dataclass
class NgramDrafter(DraftLength):
    """Drafts for one sequence by prompt lookup: find the latest earlier occurrence of the last
    few tokens in the prompt and output so far, and propose what followed it.

    The index maps each n-gram to the position just after its latest occurrence and grows by
    one position per token, so a lookup costs the same at 100 tokens of history as at 30 000."""

    index: dict[tuple[int, ...], int] = field(default_factory=dict)
    indexed: int = 0  # n-grams ending before this position are in the index
    matched: int = 0  # how many tokens the run behind the last draft matched (its kind: draft_kind)

    def propose(
        self, history: list[int], limit: int, min_match: int = 0, pool: PoolView | None = None
    ) -> list[int]:
        """Up to `limit` tokens that may follow `history`; [] when nothing matches, or when the
        match is shorter than `min_match` tokens. With a `pool`, a match of its length in earlier
        requests' text is taken over a shorter one in this request's, and drafts as many tokens
        as `max_draft` allows: a run that long is being copied, not guessed at."""
        s = self.settings
        take = self.budget(limit)
        if take == 0:
            return []
        end = len(history)
        # index every n-gram that ends before the last token, so the suffix never matches itself
        for pos in range(max(self.indexed, s.ngram_min), end):
            for n in range(s.ngram_min, min(s.ngram_max, pos) + 1):
                self.index[tuple(history[pos - n : pos])] = pos
        self.indexed = max(self.indexed, end)
        copying = min(limit, s.max_draft)
        pooled = pool.propose(history, copying) if pool is not None and pool.pool.match >= min_match else []
        self.matched = pool.pool.match if pool is not None and pooled else 0
        for n in range(min(s.ngram_max, end - 1), s.ngram_min - 1, -1):
            after = self.index.get(tuple(history[end - n :]))
            if after is not None and after < end:
                long = pool.pool.match if pool is not None else 0
                want = max(min_match, long if pooled else 0)
                match = _match_length(history, after, end, max(want, long, COPY_RUN))
                if match < want:
                    break
                self.matched = match
                return history[after : after + (copying if long and match >= long else take)]
        return pooled


# Lookups match at most COPY_RUN tokens back (longer matches are as good); a match that long is
# copying text (draft_economy.draft_kind).
COPY_RUN = 16


class NgramPool:
    """What followed each run of `match` tokens in earlier requests (the end of each prompt and
    its reply), shared by the streams of one model: a request asked again, or a reply that repeats
    an earlier one at length, drafts from it. Like llama-server's `ngram-mod`, a fixed table indexed
    by a hash of the run, so memory stays constant (`slots` x 12 bytes) and a lookup costs the same
    after a million requests as after one; each entry also keeps the whole hash, so a run that
    merely shares a table slot with another does not draft. Entries carry a salt (the adapter set),
    so one adapter's replies do not draft for another."""

    def __init__(self, match: int, slots: int = 1 << 20) -> None:
        if match < 1 or slots & (slots - 1):
            raise ValueError("NgramPool needs match >= 1 and a power-of-two number of slots")
        self.match = match
        self.mask = slots - 1
        self.keys = array("q", [0]) * slots
        self.next = array("i", [-1]) * slots

    def add(self, tokens: list[int], salt: Hashable = ()) -> None:
        """Remember what followed each run of `match` tokens in `tokens`."""
        m = self.match
        for end in range(m, len(tokens)):
            h = hash((salt, *tokens[end - m : end]))
            self.keys[h & self.mask] = h
            self.next[h & self.mask] = tokens[end]

    def propose(self, history: list[int], take: int, salt: Hashable = ()) -> list[int]:
        """Up to `take` tokens, each the one that followed the run that ends before it."""
        m = self.match
        if len(history) < m:
            return []
        run = history[-m:]
        out: list[int] = []
        while len(out) < take:
            h = hash((salt, *run[len(run) - m :]))
            i = h & self.mask
            if self.keys[i] != h or self.next[i] < 0:
                break
            out.append(self.next[i])
            run.append(self.next[i])
        return out


@dataclass(frozen=True)
class PoolView:
    """The pool as one stream sees it: under its adapter set."""

    pool: NgramPool
    salt: Hashable = ()

    def propose(self, history: list[int], take: int) -> list[int]:
        return self.pool.propose(history, take, self.salt)


def _match_length(history: list[int], after: int, end: int, most: int) -> int:
    """How many tokens before `after` equal those before `end` (counting at most `most`)."""
    k = 0
    while k < most and after - 1 - k >= 0 and history[after - 1 - k] == history[end - 1 - k]:
        k += 1
    return k


# llama.cpp's rule for a draft model (common/speculative.cpp, common_speculative_are_compatible):
# the same tokenizer type, the same BOS/EOS handling, sizes within 128 tokens (models pad their
# vocabularies differently), and the same text for every token from id 5 on.
VOCAB_MAX_SIZE_DIFFERENCE = 128
VOCAB_CHECK_START_TOKEN_ID = 5


@dataclass(frozen=True)
class VocabFacts:
    """What the vocabulary rule compares, as llama.cpp reports it for a loaded model."""

    type: int
    add_bos: bool
    bos: int
    add_eos: bool
    eos: int
    n_tokens: int
    text: Callable[[int], bytes]  # a token's text by id


def vocab_mismatch(target: VocabFacts, draft: VocabFacts) -> str | None:
    """Why `draft` cannot draft for `target` (None: it can)."""
    if target.type != draft.type:
        return f"its tokenizer type is {draft.type}, the model's is {target.type}"
    for what, t_add, d_add, t_id, d_id in (
        ("BOS", target.add_bos, draft.add_bos, target.bos, draft.bos),
        ("EOS", target.add_eos, draft.add_eos, target.eos, draft.eos),
    ):
        if t_add != d_add or (t_add and t_id != d_id):
            return (
                f"its {what} token differs (adds {what}: {d_add}, id {d_id}; the model: {t_add}, id {t_id})"
            )
    if abs(target.n_tokens - draft.n_tokens) > VOCAB_MAX_SIZE_DIFFERENCE:
        return (
            f"its vocabulary has {draft.n_tokens} tokens, the model's {target.n_tokens} "
            f"(at most {VOCAB_MAX_SIZE_DIFFERENCE} apart)"
        )
    for i in range(VOCAB_CHECK_START_TOKEN_ID, min(target.n_tokens, draft.n_tokens)):
        t, d = target.text(i), draft.text(i)
        if t != d:
            return f"token {i} is {d!r} in it and {t!r} in the model"
    return None
