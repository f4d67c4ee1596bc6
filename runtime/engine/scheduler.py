"""Continuous batching over one llama.cpp context with N sequence slots.

One thread owns the context. Each step it takes the generating sequences of one adapter group,
adds their next token plus chunks of pending prompts to one batch, makes one `llama_decode`, and
samples every sequence from its own logits row with its own sampler chain. Requests join at the
next step; finished or cancelled ones free their slot at once.

Speculation (runtime/engine/speculation.py): a generating sequence may add drafted tokens after its
next token in the same batch (drafts by n-gram lookup, or from a draft model that drafts for all
streams together before the step: runtime/engine/draft_model.py). Each drafted position is sampled
like any other, the draft is kept while the samples agree with it, and the KV cells of the rest are
removed, so what a stream produces does not depend on whether it speculated.

Adapters apply to a whole context, not to one sequence, so sequences with different adapter sets
cannot share a decode step. Policy: groups take turns, one step each, in round-robin order, so
one adapter's traffic cannot starve another's. A slot's cached tokens are reused for a new
request only when both the tokens and the adapter set match: KV computed under one adapter set is
never reused under another (llama.cpp does not invalidate it by itself).
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import llama_cpp.llama_cpp as ll

from hermesd.runtime.engine.context_settings import ContextSettings
from hermesd.runtime.engine.draft_economy import DraftEconomy, draft_kind
from hermesd.runtime.engine.draft_model import DraftWant, ModelDrafter
from hermesd.runtime.engine.llama_model import LlamaModel
from hermesd.runtime.engine.protocol import (
    EngineEvent,
    EngineStats,
    FinishEvent,
    FinishReason,
    GenerationRequest,
    TextEvent,
    Usage,
)
from hermesd.runtime.engine.sampling import SamplerChain
from hermesd.runtime.engine.speculation import (
    DRAFT,
    NGRAM,
    DraftLength,
    NgramDrafter,
    NgramPool,
    PoolView,
    SpeculationSettings,
)
from hermesd.runtime.engine.text_stream import ReasoningTracker, TextAssembler
from hermesd.runtime.errors import EngineOverloaded, EngineShuttingDown

log = logging.getLogger(__name__)

AdapterKey = tuple[tuple[str, float], ...]


@dataclass
class Sequence:
    request: GenerationRequest
    prompt: list[int]
    sink: Callable[[EngineEvent], None]
    adapter_key: AdapterKey
    cancelled: bool = False
    slot: Slot | None = None
    history: list[int] = field(default_factory=list)  # prompt + generated tokens
    n_past: int = 0  # tokens of history already in the KV cache
    pending: list[int] = field(default_factory=list)  # tokens to feed next (prompt chunk or sampled)
    sampler: SamplerChain | None = None
    drafter: NgramDrafter | None = None
    draft_length: DraftLength | None = None  # the draft model's, for this stream
    draft_kind: str = NGRAM  # of the draft verified in this step (draft_economy.draft_kind)
    assembler: TextAssembler = field(default_factory=TextAssembler)
    tracker: ReasoningTracker = field(default_factory=ReasoningTracker)
    completion_tokens: int = 0
    cached_tokens: int = 0
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    started: float = field(default_factory=time.monotonic)
    # set by the consumer once it has the first token (the engine waits for it, briefly)
    first_taken: threading.Event = field(default_factory=threading.Event)


@dataclass
class Slot:
    seq_id: int
    cached: list[int] = field(default_factory=list)
    adapter_key: AdapterKey = ()
    busy: Sequence | None = None
    last_used: float = 0.0


class Scheduler:
    def __init__(
        self,
        model: LlamaModel,
        config: ContextSettings,
        flush: Callable[[list[Sequence]], None] = lambda started: None,
        speculation: SpeculationSettings | None = None,
        drafter: ModelDrafter | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.speculation = speculation or SpeculationSettings()
        self.model_drafter = drafter
        ctx, self.n_batch = model.new_context(config)
        self.ctx = ctx
        self.n_ctx_seq = min(config.ctx, ll.llama_n_ctx_seq(ctx))
        self.memory = ll.llama_get_memory(ctx)
        # recurrent state cannot be cut or shared from the middle of a sequence
        cells = not (ll.llama_model_is_recurrent(model.handle) or ll.llama_model_is_hybrid(model.handle))
        # sharing a prefix tags cells with one more sequence: only within one KV stream
        self.share_prefixes = cells and config.kv_unified
        # rejected drafts are cut off the end of a sequence: only a cache of cells can do that
        wanted = self.speculation.ngram or drafter is not None
        self.speculate = wanted and cells
        if wanted and not self.speculate:
            log.warning("speculative decoding is off: this model's memory cannot drop rejected drafts")
        # earlier requests' text, for lookup (12 MiB, whatever the traffic)
        pooled = self.speculate and self.speculation.ngram and self.speculation.pool_match > 0
        self.pool = NgramPool(self.speculation.pool_match) if pooled else None
        self.economy = DraftEconomy() if self.speculation.priced else None
        self.widest = 0  # the most rows with logits a step has read
        self.batch = ll.llama_batch_init(self.n_batch, 0, 1)
        self.slots = [Slot(seq_id=i) for i in range(config.parallel)]
        self.waiting: deque[Sequence] = deque()
        self.cv = threading.Condition()
        self.stopping = False
        self.accepting = True
        self._current_adapters: AdapterKey = ()
        self._group_turn = 0
        self._control: deque[tuple[Callable[[], object], Future[object]]] = deque()
        # Called after each round of the loop: events are handed to consumers once per step, not
        # once per token, which keeps wake-ups of the event loop flat as streams are added.
        self.flush = flush
        self.steps = 0
        self._started: list[Sequence] = []  # sequences whose first token came in this step
        self.prompt_tokens = 0
        self.cached_prompt_tokens = 0
        self.generated_tokens = 0
        self.finished: dict[str, int] = {}
        self.spec_drafted: dict[str, int] = {}
        self.spec_accepted: dict[str, int] = {}
        self.thread = threading.Thread(target=self._run, name="hermesd-decode", daemon=True)
        self.thread.start()

    # -- called from any thread
    def submit(self, seq: Sequence) -> None:
        with self.cv:
            if not self.accepting:
                raise EngineShuttingDown("the server is shutting down")
            free = sum(1 for s in self.slots if s.busy is None)
            if len(self.waiting) >= free + self.config.max_queue:
                raise EngineOverloaded(
                    f"server busy: {len(self.slots)} requests running and {len(self.waiting)} waiting"
                )
            self.waiting.append(seq)
            self.cv.notify()

    def cancel(self, seq: Sequence) -> None:
        with self.cv:
            seq.cancelled = True
            self.cv.notify()

    def stats(self) -> EngineStats:
        with self.cv:
            return EngineStats(
                running=sum(1 for s in self.slots if s.busy is not None),
                waiting=len(self.waiting),
                slots=len(self.slots),
                decode_steps=self.steps,
                prompt_tokens=self.prompt_tokens,
                cached_prompt_tokens=self.cached_prompt_tokens,
                generated_tokens=self.generated_tokens,
                finished=dict(self.finished),
                spec_drafted=dict(self.spec_drafted),
                spec_accepted=dict(self.spec_accepted),
            )

    def busy(self) -> int:
        with self.cv:
            return len(self.waiting) + sum(1 for s in self.slots if s.busy is not None)

    def stop(self) -> None:
        with self.cv:
            self.stopping = True
            self.accepting = False
            self.cv.notify()
        self.thread.join(timeout=30)
        if not self.thread.is_alive():
            ll.llama_batch_free(self.batch)
            ll.llama_free(self.ctx)
            self.ctx = None

    def call(self, fn: Callable[[], object], timeout: float = 120.0) -> object:
        """Run `fn` on the decode thread between two steps, so it never races a decode."""
        future: Future[object] = Future()
        with self.cv:
            if self.stopping:
                raise EngineShuttingDown("the server is shutting down")
            self._control.append((fn, future))
            self.cv.notify()
        return future.result(timeout=timeout)

    # -- run on the decode thread through call()
    def abort_all(self, reason: str) -> int:
        """End every running and waiting request with an error event (the drain deadline passed)."""
        active = self._active()
        for seq in active:
            self._finish(seq, "error", reason)
        waiting = list(self.waiting)
        self.waiting.clear()
        for seq in waiting:
            seq.sink(FinishEvent("error", Usage(len(seq.prompt), 0), reason))
        return len(active) + len(waiting)

    def adapters_in_use(self) -> set[str]:
        used = {n for s in self.slots if s.busy for n, _ in s.busy.adapter_key}
        return used | {n for q in self.waiting for n, _ in q.adapter_key}

    def forget_adapter(self, name: str) -> None:
        """Drop cached prefixes computed under `name` and stop referring to it."""
        for slot in self.slots:
            if slot.busy is None and any(n == name for n, _ in slot.adapter_key):
                slot.cached = []
                slot.adapter_key = ()
                ll.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
        if any(n == name for n, _ in self._current_adapters):
            self._apply_adapters(())

    # -- the decode thread
    def _run(self) -> None:
        while True:
            with self.cv:
                while not self.stopping and not self.waiting and not self._active() and not self._control:
                    self.cv.wait()
                if self.stopping:
                    break
                control = list(self._control)
                self._control.clear()
            for fn, future in control:
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)
            with self.cv:
                self._drop_cancelled_waiting()
                self._admit()
            try:
                self._step()
            except Exception:  # a bug here must end the affected requests, not the daemon
                log.exception("decode step failed")
                for seq in self._active():
                    self._finish(seq, "error", "internal error in the decode loop")
            started, self._started = self._started, []
            self.flush(started)
        for seq in self._active():
            self._finish(seq, "error", "the server is shutting down")
        for seq in list(self.waiting):
            seq.sink(FinishEvent("error", Usage(len(seq.prompt), 0), "the server is shutting down"))
        self.waiting.clear()
        for _fn, future in self._control:
            future.set_exception(EngineShuttingDown("the server is shutting down"))
        self.flush([])

    def _active(self) -> list[Sequence]:
        return [s.busy for s in self.slots if s.busy is not None]

    def _drop_cancelled_waiting(self) -> None:
        for seq in [s for s in self.waiting if s.cancelled]:
            self.waiting.remove(seq)
            seq.sink(FinishEvent("cancelled", Usage(len(seq.prompt), 0)))

    def _admit(self) -> None:
        while self.waiting:
            free = [s for s in self.slots if s.busy is None]
            if not free:
                return
            seq = self.waiting.popleft()
            try:
                sampler = SamplerChain(
                    seq.request.sampling,
                    vocab=self.model.vocab,
                    grammar=seq.request.grammar,
                    grammar_trigger=seq.request.grammar_trigger,
                )
            except Exception as exc:  # a bad grammar ends this request, not the loop
                seq.sink(FinishEvent("error", Usage(len(seq.prompt), 0), str(exc)))
                continue
            self._attach(seq, self._choose_slot(seq, free), sampler)

    def _choose_slot(self, seq: Sequence, free: list[Slot]) -> Slot:
        best, _ = _longest_prefix(seq, free)
        return best if best is not None else min(free, key=lambda s: s.last_used)

    def _attach(self, seq: Sequence, slot: Slot, sampler: SamplerChain) -> None:
        keep = 0
        if slot.adapter_key == seq.adapter_key:
            keep = min(_common_prefix(slot.cached, seq.prompt), len(seq.prompt) - 1)
        donor, shared = self._longest_prefix_elsewhere(seq, slot)
        shared = min(shared, len(seq.prompt) - 1)
        if donor is not None and shared > keep:
            # Another slot, running or idle, holds a longer prefix (typically a system prompt that
            # many conversations share): this sequence takes those cells too. In the unified KV
            # cache that tags the cells with one more sequence id; nothing is copied or recomputed.
            ll.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
            ll.llama_memory_seq_cp(self.memory, donor.seq_id, slot.seq_id, 0, shared)
            keep = shared
        # the slot's KV holds exactly slot.cached: drop what the new prompt does not share (some
        # memory types cannot cut a sequence in the middle; then drop all of it)
        elif keep < len(slot.cached) and (
            keep == 0 or not ll.llama_memory_seq_rm(self.memory, slot.seq_id, keep, -1)
        ):
            keep = 0
            ll.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
        slot.busy = seq
        slot.adapter_key = seq.adapter_key
        slot.cached = []
        seq.slot = slot
        seq.history = list(seq.prompt)
        seq.n_past = keep
        seq.cached_tokens = keep
        self.prompt_tokens += len(seq.prompt)
        self.cached_prompt_tokens += keep
        seq.pending = seq.prompt[keep:]
        req = seq.request
        seq.sampler = sampler
        seq.drafter = NgramDrafter(self.speculation) if self.speculate and self.speculation.ngram else None
        seq.draft_length = (
            DraftLength(self.speculation) if self.speculate and self.model_drafter is not None else None
        )
        seq.assembler = TextAssembler(stops=req.stop)
        seq.tracker = ReasoningTracker(req.reasoning)
        if seq.tracker.over_budget:  # a budget of 0 for a prompt that opened the reasoning
            self._force_close(seq, [])

    def _longest_prefix_elsewhere(self, seq: Sequence, slot: Slot) -> tuple[Slot | None, int]:
        """The other slot, running or idle, whose KV cells share the longest prefix with `seq`."""
        if not self.share_prefixes:
            return None, 0
        return _longest_prefix(seq, [other for other in self.slots if other is not slot])

    def _step(self) -> None:
        for seq in self._active():
            if seq.cancelled:
                self._finish(seq, "cancelled")
        active = self._active()
        if not active:
            return
        groups: dict[AdapterKey, list[Sequence]] = {}
        for seq in active:
            groups.setdefault(seq.adapter_key, []).append(seq)
        keys = sorted(groups)
        key = keys[self._group_turn % len(keys)]
        self._group_turn += 1
        if key != self._current_adapters:
            self._apply_adapters(key)
        members = groups[key]

        batch = self.batch
        n = 0
        outputs: list[tuple[Sequence, int, str, list[int]]] = []
        # generating sequences first: one token each keeps every stream moving
        order = sorted(members, key=lambda s: len(s.pending) > 1)
        # Drafts wait while a prompt waits (they would take its room in the batch and delay that
        # stream's start). A step of many streams keeps the hardware busy already, so there only
        # the drafts of streams that are plainly copying text are verified (SpeculationSettings).
        streams = sum(1 for s in members if s.pending)
        # a step of generating streams only is also timed: what drafts are worth here (DraftEconomy)
        timed = self.speculate and not any(len(s.pending) > 1 for s in members)
        crowded = streams > self.speculation.max_streams
        speculate = timed and not (crowded and not self.speculation.crowded_match)
        room = (self.n_batch - streams) // max(1, streams)
        drafts = self._drafts(members, room, streams, crowded) if speculate else {}
        for seq in order:
            if not seq.pending:
                continue
            room = self.n_batch - n
            if room <= 0:
                break
            take = seq.pending[:room]
            source, draft = drafts.get(id(seq), (NGRAM, []))
            draft = draft[: room - len(take)]
            if draft:
                self.spec_drafted[source] = self.spec_drafted.get(source, 0) + len(draft)
                seq.drafted_tokens += len(draft)
            first = n
            for j, tok in enumerate(take + draft):
                batch.token[n] = tok
                batch.pos[n] = seq.n_past + j
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq.slot.seq_id  # type: ignore[union-attr]
                batch.logits[n] = 1 if draft else 0  # every drafted position is verified
                n += 1
            seq.n_past += len(take) + len(draft)
            del seq.pending[: len(take)]
            if not seq.pending:
                batch.logits[n - 1] = 1
                outputs.append((seq, first if draft else n - 1, source, draft))
        if n == 0:
            return
        batch.n_tokens = n
        started = time.perf_counter()
        rc = ll.llama_decode(self.ctx, batch)
        self.steps += 1
        if rc != 0:
            log.error("llama_decode returned %d for a batch of %d tokens", rc, n)
            for seq in members:
                slot = seq.slot
                self._finish(seq, "error", f"llama.cpp decode failed (code {rc})")
                if slot is not None:  # what the failed step left in its KV is unknown: forget it
                    slot.cached = []
                    ll.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
            return
        for seq, index, source, draft in outputs:
            self._after_logits(seq, index, source, draft)
        # not a step that read more logits than any before: llama.cpp grew its output buffer for
        # it (n_vocab floats a row, fresh memory), a cost paid once. Timed, such steps of Gemma 3
        # 270M at 16 streams read about twice as dear per row as later ones of their size, and
        # drafts that size stopped.
        if timed and self.economy is not None and n <= self.widest:
            self.economy.observe_step(n, time.perf_counter() - started)
        self.widest = max(self.widest, n if timed else 0)

    def _drafts(
        self, members: list[Sequence], room: int, rows: int, crowded: bool
    ) -> dict[int, tuple[str, list[int]]]:
        """Tokens to verify after each generating stream's next one, by id(seq), with their
        source: n-gram lookup where it finds a match (it costs nothing) unless the draft model's
        drafts are kept more often than that kind of match's, else the draft model, for all the
        streams that want one in one go; in a crowded step only lookups that match the last
        `crowded_match` tokens. No more than the batch, the context and the request's max_tokens
        have room for, nor than pays for itself in a step of `rows` rows (DraftEconomy; whether
        requests wait for a slot tells it what a kept token spares the batch)."""
        min_match = self.speculation.crowded_match if crowded else 0
        # (stream, kind, how many tokens it may draft, the lookup's draft or None for the model's)
        candidates: list[tuple[Sequence, str, int, list[int] | None]] = []
        for seq in members:
            # not before the first token: a prompt found cached leaves one token to decode, and a
            # draft in that step would hold its first token back for the whole verification (on
            # Gemma 3 270M, 4 streams drafting 32 tokens each: 1.1 s instead of 0.1)
            if len(seq.pending) != 1 or seq.slot is None or seq.completion_tokens == 0:
                continue
            limit = min(
                room,
                self.n_ctx_seq - 1 - seq.n_past,
                seq.request.max_tokens - seq.completion_tokens - 1,
            )
            draft = (
                seq.drafter.propose(seq.history, limit, min_match, None if crowded else self._pool_view(seq))
                if seq.drafter is not None
                else []
            )
            kind = draft_kind(NGRAM, seq.drafter.matched) if seq.drafter is not None and draft else ""
            model = None if crowded or seq.draft_length is None else seq.draft_length.budget(limit)
            if model and (not draft or self._rather_model(kind)):
                candidates.append((seq, DRAFT, model, None))
            elif draft:
                candidates.append((seq, kind, len(draft), draft))
        counts = (
            self.economy.share([(k, length) for _, k, length, _ in candidates], rows, bool(self.waiting))
            if self.economy is not None
            else [length for _, _, length, _ in candidates]
        )
        out: dict[int, tuple[str, list[int]]] = {}
        wants: list[tuple[Sequence, DraftWant]] = []
        for (seq, kind, _, lookup), count in zip(candidates, counts, strict=True):
            if count == 0:
                continue
            seq.draft_kind = kind
            if lookup is not None:
                out[id(seq)] = (NGRAM, lookup[:count])
            else:
                assert seq.slot is not None
                wants.append((seq, DraftWant(seq.slot.seq_id, seq, seq.history, count)))
        if wants:
            assert self.model_drafter is not None
            started = time.perf_counter()
            proposed = self.model_drafter.propose([w for _, w in wants])
            if self.economy is not None:
                tokens = sum(len(p) for p in proposed.values())
                self.economy.observe_proposing(tokens, time.perf_counter() - started)
            for seq, want in wants:
                out[id(seq)] = (DRAFT, proposed.get(want.seq_id, []))
        return out

    def _rather_model(self, kind: str) -> bool:
        """Whether a stream with a draft model drafts with it rather than by a lookup of `kind`:
        where its drafts are kept more often than such lookups' (measured; unpriced, the lookup,
        which costs nothing to propose)."""
        return self.economy is not None and self.economy.rate(DRAFT) > self.economy.rate(kind)

    def _pool_view(self, seq: Sequence) -> PoolView | None:
        """The pool, for a stream that may draft from it. Not for a seeded request: drafts from
        other requests' text would make the batches it is decoded in, and so (at a sample near a
        boundary) its reply, depend on earlier traffic, and a seed promises the same reply again."""
        if self.pool is None or seq.request.sampling.seed is not None:
            return None
        return PoolView(self.pool, seq.adapter_key)

    def _apply_adapters(self, key: AdapterKey) -> None:
        handles = []
        for name, _scale in key:
            adapter = self.model.get_adapter(name)
            if adapter is None:
                raise RuntimeError(f"adapter {name} vanished while in use")
            handles.append(adapter.handle)
        if handles:
            arr = (ctypes.c_void_p * len(handles))(*[ctypes.cast(h, ctypes.c_void_p) for h in handles])
            scales = (ctypes.c_float * len(handles))(*[s for _, s in key])
            ll.llama_set_adapters_lora(
                self.ctx,
                ctypes.cast(arr, ctypes.POINTER(ctypes.POINTER(ctypes.c_void_p))),
                len(handles),
                scales,
            )
        else:
            ll.llama_set_adapters_lora(self.ctx, None, 0, None)
        self._current_adapters = key

    def _after_logits(self, seq: Sequence, index: int, source: str, draft: list[int]) -> None:
        """Sample the next token; with a draft, go on sampling its positions while the samples
        agree with it, then drop the KV cells of the drafted tokens that were not kept."""
        assert seq.sampler is not None and seq.slot is not None
        slot = seq.slot
        base = seq.n_past - 1 - len(draft)  # the position of the token fed before the draft
        kept = 0
        for i in range(len(draft) + 1):
            seq.n_past = base + 1 + i  # the cells that hold accepted tokens, as without a draft
            token = seq.sampler.sample(self.ctx, index + i)
            self._take(seq, token)
            if slot.busy is not seq or i == len(draft) or token != draft[i] or seq.pending != [token]:
                break
            kept += 1
            seq.accepted_tokens += 1  # counted as it goes: a later row may finish the request
        if not draft:
            return
        seq.n_past = base + 1 + kept
        # a sequence that finished on row `kept` left the slot caching history[:n_past] already
        ll.llama_memory_seq_rm(self.memory, slot.seq_id, seq.n_past, -1)
        self.spec_accepted[source] = self.spec_accepted.get(source, 0) + kept
        if self.economy is not None:
            self.economy.observe_draft(seq.draft_kind, len(draft), kept)
        length = seq.drafter if source == NGRAM else seq.draft_length
        assert length is not None
        length.update(len(draft), kept)

    def _take(self, seq: Sequence, token: int) -> None:
        """One sampled token: stop, stream its text, or queue it for the next step."""
        req = seq.request
        eog = self.model.is_eog(token)
        if eog and not req.ignore_eos:
            self._finish(seq, "stop")
            return
        seq.completion_tokens += 1
        self.generated_tokens += 1
        if seq.completion_tokens == 1:
            self._started.append(seq)
        seq.history.append(token)
        piece = b"" if eog else self.model.token_bytes(token)
        text = seq.assembler.push(piece)
        if text:
            seq.sink(TextEvent(text))
        if seq.assembler.stopped:
            self._finish(seq, "stop")
            return
        seq.tracker.push(piece.decode("utf-8", "replace"))
        if seq.tracker.over_budget:
            self._force_close(seq, [token])
        else:
            seq.pending = [token]
        if seq.completion_tokens >= req.max_tokens or seq.n_past + len(seq.pending) >= self.n_ctx_seq:
            self._finish(seq, "length")

    def _force_close(self, seq: Sequence, before: list[int]) -> None:
        """End the reasoning now: write the close tag as if the model had, then let it answer."""
        forced = self.model.tokenize(seq.tracker.close(), add_bos=False)
        assert seq.sampler is not None
        for tok in forced:
            seq.sampler.accept(tok)
            seq.history.append(tok)
            text = seq.assembler.push(self.model.token_bytes(tok))
            if text:
                seq.sink(TextEvent(text))
        seq.completion_tokens += len(forced)
        seq.pending = before + forced if before else (seq.pending + forced)

    def _finish(self, seq: Sequence, reason: FinishReason, error: str | None = None) -> None:
        slot = seq.slot
        if slot is None or slot.busy is not seq:
            return
        if reason in ("stop", "length"):
            tail = seq.assembler.flush()
            if tail:
                seq.sink(TextEvent(tail))
        usage = Usage(
            prompt_tokens=len(seq.prompt),
            completion_tokens=seq.completion_tokens,
            cached_tokens=seq.cached_tokens,
            reasoning_tokens=seq.tracker.tokens,
            accepted_prediction_tokens=seq.accepted_tokens,
            rejected_prediction_tokens=seq.drafted_tokens - seq.accepted_tokens,
        )
        if seq.sampler is not None:
            seq.sampler.close()
            seq.sampler = None
        if self.pool is not None and seq.drafter is not None:
            # the end of the prompt too, so that the same request asked again drafts from the start
            self.pool.add(seq.history[max(0, len(seq.prompt) - self.pool.match) :], seq.adapter_key)
        # what the KV cache now holds for this slot, reusable by the next request
        slot.cached = seq.history[: seq.n_past]
        slot.busy = None
        slot.last_used = time.monotonic()
        self.finished[reason] = self.finished.get(reason, 0) + 1
        seq.sink(FinishEvent(reason, usage, error, seq.assembler.matched if reason == "stop" else None))
        log.debug(
            "request %s finished: %s after %d tokens", seq.request.request_id, reason, seq.completion_tokens
        )


def _longest_prefix(seq: Sequence, slots: list[Slot]) -> tuple[Slot | None, int]:
    """The slot whose KV cells share the longest prefix with `seq`'s prompt, and its length, among
    slots under the same adapter set (a cached prefix never crosses adapter sets)."""
    best, best_len = None, 0
    for slot in slots:
        if slot.adapter_key != seq.adapter_key:
            continue
        # a running sequence's cells hold exactly the tokens decoded so far
        cells = slot.busy.history[: slot.busy.n_past] if slot.busy is not None else slot.cached
        n = _common_prefix(cells, seq.prompt)
        if n > best_len:
            best, best_len = slot, n
    return best, best_len


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
