"""A small draft model that proposes tokens for the target model to verify (speculative decoding).

It has its own llama.cpp context with one sequence per slot of the target's, so it keeps each
stream's text in its own KV cache and drafts for all speculating streams together: one
`llama_decode` catches every stream up with what the target accepted since its last draft, then
one more per drafted position, greedily (a draft is then a function of the text, which is what
keeps the verification exact: runtime/engine/speculation.py).

Nothing is rolled back eagerly: before each draft the cells that no longer match the stream's
text (rejected drafts, or another request in the slot) are removed, from the first difference on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import llama_cpp.llama_cpp as ll

from hermesd.runtime.engine.context_settings import ContextSettings
from hermesd.runtime.engine.llama_model import LlamaModel
from hermesd.runtime.engine.speculation import VocabFacts, vocab_mismatch
from hermesd.runtime.errors import DraftVocabMismatch

log = logging.getLogger(__name__)


def vocab_facts(model: LlamaModel) -> VocabFacts:
    vocab = model.vocab
    return VocabFacts(
        type=int(ll.llama_vocab_type(vocab)),
        add_bos=bool(ll.llama_vocab_get_add_bos(vocab)),
        bos=int(ll.llama_vocab_bos(vocab)),
        add_eos=bool(ll.llama_vocab_get_add_eos(vocab)),
        eos=int(ll.llama_vocab_eos(vocab)),
        n_tokens=model.n_vocab,
        text=lambda i: ll.llama_vocab_get_text(vocab, i) or b"",
    )


@dataclass
class _Stream:
    """What the draft context holds for one sequence id."""

    owner: object = None  # the request whose text `cells` follows
    cells: list[int] = field(default_factory=list)
    checked: int = 0  # cells[:checked] are known to equal the owner's text


@dataclass(frozen=True)
class DraftWant:
    seq_id: int
    owner: object  # identifies the request: a new one in the slot is compared from the start
    history: list[int]  # the stream's whole text so far, its next input token last
    count: int  # tokens to draft


class ModelDrafter:
    """Owns the draft model's context; used from the decode thread only."""

    def __init__(self, model: LlamaModel, target: LlamaModel, context: ContextSettings) -> None:
        problem = vocab_mismatch(vocab_facts(target), vocab_facts(model))
        if problem is not None:
            raise DraftVocabMismatch(
                f"draft model {model.config.path} cannot draft for {target.config.path}: {problem}. "
                "A draft model must share the model's vocabulary (for Hermes 4 14B a Qwen3 model, for "
                "70B and 405B a Llama 3 one)"
            )
        self.model = model
        self.n_vocab_target = target.n_vocab
        self.ctx, self.n_batch = model.new_context(context, "the draft model's context")
        self.memory = ll.llama_get_memory(self.ctx)
        self.batch = ll.llama_batch_init(self.n_batch, 0, 1)
        self.greedy = ll.llama_sampler_init_greedy()
        self.streams = [_Stream() for _ in range(context.parallel)]

    def propose(self, wants: list[DraftWant]) -> dict[int, list[int]]:
        """Greedy drafts of up to `count` tokens per sequence id, all sequences decoded together."""
        drafts: dict[int, list[int]] = {w.seq_id: [] for w in wants}
        feeds: list[tuple[DraftWant, list[int]]] = []
        for want in wants:
            feeds.append((want, self._catch_up(want)))
        # catch up: every stream's new text, in batches; the last token of each gives its first draft
        live: list[DraftWant] = []
        while feeds:
            n, done, rest = 0, [], []
            for want, tokens in feeds:
                room = self.n_batch - n
                if room <= 0:
                    rest.append((want, tokens))
                    continue
                take, tokens = tokens[:room], tokens[room:]
                n = self._add(want.seq_id, take, n, last_logits=not tokens)
                if tokens:
                    rest.append((want, tokens))
                else:
                    done.append((want, n - 1))
            if not self._decode(n, wants):
                return {}
            for want, index in done:
                if self._draw(want, index, drafts):
                    live.append(want)
            feeds = rest
        # then one position per step for the streams that want more
        while live:
            n, rows = 0, []
            for want in live:
                n = self._add(want.seq_id, [drafts[want.seq_id][-1]], n, last_logits=True)
                rows.append((want, n - 1))
            if not self._decode(n, wants):
                return {}
            live = [want for want, index in rows if self._draw(want, index, drafts)]
        return {seq_id: d for seq_id, d in drafts.items() if d}

    def _catch_up(self, want: DraftWant) -> list[int]:
        """Drop the cells that differ from the stream's text; return the tokens to feed (at least
        the last one, whose logits give the first draft)."""
        stream = self.streams[want.seq_id]
        history = want.history
        if stream.owner is not want.owner:
            stream.owner, stream.checked = want.owner, 0
        cells = stream.cells
        i, end = stream.checked, min(len(cells), len(history) - 1)
        while i < end and cells[i] == history[i]:
            i += 1
        if i < len(cells):
            if not ll.llama_memory_seq_rm(self.memory, want.seq_id, i, -1):
                ll.llama_memory_seq_rm(self.memory, want.seq_id, -1, -1)
                i = 0
            del cells[i:]
        # propose() feeds the rest now, after which the cells hold the whole text
        stream.checked = len(history)
        return history[i:]

    def _add(self, seq_id: int, tokens: list[int], n: int, *, last_logits: bool) -> int:
        batch, cells = self.batch, self.streams[seq_id].cells
        for j, tok in enumerate(tokens):
            batch.token[n] = tok
            batch.pos[n] = len(cells) + j
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = seq_id
            batch.logits[n] = 1 if last_logits and j == len(tokens) - 1 else 0
            n += 1
        cells.extend(tokens)
        return n

    def _decode(self, n: int, wants: list[DraftWant]) -> bool:
        self.batch.n_tokens = n
        rc = ll.llama_decode(self.ctx, self.batch)
        if rc == 0:
            return True
        # what this step left in the draft cache is unknown: forget it, draft nothing this time
        log.warning("draft model decode returned %d; no drafts this step", rc)
        for want in wants:
            stream = self.streams[want.seq_id]
            stream.cells.clear()
            stream.checked = 0
            ll.llama_memory_seq_rm(self.memory, want.seq_id, -1, -1)
        return False

    def _draw(self, want: DraftWant, index: int, drafts: dict[int, list[int]]) -> bool:
        """Take the draft model's greedy token at batch row `index`; True if the stream wants more."""
        token = int(ll.llama_sampler_sample(self.greedy, self.ctx, index))
        if token >= self.n_vocab_target:  # a padding id the target does not have
            return False
        drafts[want.seq_id].append(token)
        return len(drafts[want.seq_id]) < want.count and not self.model.is_eog(token)

    def close(self) -> None:
        if self.ctx:
            ll.llama_sampler_free(self.greedy)
            ll.llama_batch_free(self.batch)
            ll.llama_free(self.ctx)
            self.ctx = None
        self.model.close()
