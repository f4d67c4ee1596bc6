"""Per-sequence sampler chains built from a request's sampling parameters."""

from __future__ import annotations

import ctypes
import random
import re

import llama_cpp.llama_cpp as ll
import numpy as np

from hermesd.runtime.engine.protocol import SamplingParams


class SamplerChain:
    """A llama.cpp sampler chain owned by one sequence; freed with `close()`."""

    def __init__(
        self,
        params: SamplingParams,
        *,
        vocab: ctypes.c_void_p,
        grammar: str | None = None,
        grammar_trigger: str | None = None,
    ) -> None:
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        self.handle = chain
        # Plain greedy (no grammar, no penalties) is the argmax of the logits, first index on a tie,
        # as llama.cpp's greedy sampler picks it. Taking it straight from the logits skips building
        # the candidate array of the whole vocabulary (262k entries for Gemma 3), which cost about a
        # quarter of a millisecond per stream and step.
        self.n_vocab = int(ll.llama_vocab_n_tokens(vocab))
        self.argmax_only = False
        add = lambda s: ll.llama_sampler_chain_add(chain, s)  # noqa: E731
        if grammar is not None:
            if grammar_trigger:
                # the whole text so far must match; the group marks where the grammar starts
                pattern = r"[\s\S]*?(" + re.escape(grammar_trigger) + r")[\s\S]*"
                patterns = (ctypes.c_char_p * 1)(pattern.encode())
                g = ll.llama_sampler_init_grammar_lazy_patterns(
                    vocab, grammar.encode(), b"root", patterns, 1, None, 0
                )
            else:
                g = ll.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
            if not g:
                ll.llama_sampler_free(chain)
                self.handle = None
                raise ValueError("llama.cpp could not parse the grammar")
            add(g)
        if params.repeat_penalty != 1.0 or params.presence_penalty or params.frequency_penalty:
            add(
                ll.llama_sampler_init_penalties(
                    self.n_vocab,  # this llama.cpp's signature starts with it (llama.h)
                    params.penalty_last_n,
                    params.repeat_penalty,
                    params.frequency_penalty,
                    params.presence_penalty,
                )
            )
        if params.temperature <= 0.0:
            add(ll.llama_sampler_init_greedy())
            self.argmax_only = grammar is None and ll.llama_sampler_chain_n(chain) == 1
            return
        if params.top_k > 0:
            add(ll.llama_sampler_init_top_k(params.top_k))
        if params.top_p < 1.0:
            add(ll.llama_sampler_init_top_p(params.top_p, 1))
        if params.min_p > 0.0:
            add(ll.llama_sampler_init_min_p(params.min_p, 1))
        add(ll.llama_sampler_init_temp(params.temperature))
        seed = params.seed if params.seed is not None else random.getrandbits(32)
        add(ll.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def sample(self, ctx: ctypes.c_void_p, index: int) -> int:
        """Sample from the logits of batch output `index`; the chain accepts the token itself."""
        if self.argmax_only:
            logits = ll.llama_get_logits_ith(ctx, index)
            return int(np.ctypeslib.as_array(logits, shape=(self.n_vocab,)).argmax())
        return int(ll.llama_sampler_sample(self.handle, ctx, index))

    def accept(self, token: int) -> None:
        """Tell the chain about a token the engine wrote itself (penalties, grammar state)."""
        ll.llama_sampler_accept(self.handle, token)

    def close(self) -> None:
        if self.handle:
            ll.llama_sampler_free(self.handle)
            self.handle = None
