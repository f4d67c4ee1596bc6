"""The llama.cpp context hermesd runs, described once.

`serve` (the Scheduler), `hermesd plan --verify` (the dry run in runtime/plan_verify.py) and the
planner's memory arithmetic (runtime/placement.py) all take their llama.cpp context settings from a
`ContextSettings`, so a plan budgets, and a dry run verifies, exactly the configuration serve runs:
the same context per sequence, slots, batch sizes, KV cache type, unified KV cache and flash
attention. `KV_CACHE_TYPES` is the one list of KV cache types every flag and setting accepts.

Pure Python: `fill` writes onto a `llama_context_params` it is handed, so importing this module
loads no llama.cpp (the planner stays a pure function).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

# llama.cpp pads the context to this many cells (GGML_PAD(n_ctx, 256) in llama_context's constructor)
KV_PAD = 256
# the micro-batch hermesd runs (llama.cpp's default n_ubatch; llama-server's too)
MAX_UBATCH = 512


@dataclass(frozen=True)
class KVCacheType:
    ggml_type: int  # enum ggml_type
    block_bytes: int
    block_elements: int

    @property
    def quantized(self) -> bool:
        return self.block_elements > 1


# The KV cache types hermesd serves with (settings, `serve`, `plan` and `pull` flags all take this
# one list), each checked on this llama.cpp build (CPU): f32, f16 and bf16 run with and without flash
# attention; the quantized ones need it (llama.cpp refuses a quantized V cache without it).
KVType = Literal["f16", "bf16", "f32", "q8_0", "q4_0"]
KV_TYPE_NAMES: tuple[str, ...] = get_args(KVType)
KV_CACHE_TYPES: dict[str, KVCacheType] = {
    "f16": KVCacheType(1, 2, 1),
    "bf16": KVCacheType(30, 2, 1),
    "f32": KVCacheType(0, 4, 1),
    "q8_0": KVCacheType(8, 34, 32),
    "q4_0": KVCacheType(2, 18, 32),
}
assert tuple(KV_CACHE_TYPES) == KV_TYPE_NAMES, "every KV type needs its ggml type and block size"


def kv_type_problem(kv_type: str, flash_attn: bool | None) -> str | None:
    """Why llama.cpp cannot run this KV cache type with this flash-attention setting, or None."""
    kind = KV_CACHE_TYPES.get(kv_type)
    if kind is None:
        return f"unknown KV cache type {kv_type!r}; choose one of {', '.join(KV_TYPE_NAMES)}"
    if kind.quantized and flash_attn is False:
        return f"a {kv_type} KV cache needs flash attention in llama.cpp (drop --no-flash-attn)"
    return None


def pad_cells(n: int) -> int:
    return math.ceil(n / KV_PAD) * KV_PAD


@dataclass(frozen=True)
class ContextSettings:
    ctx: int = 4096  # tokens per sequence
    parallel: int = 4  # sequences decoded together
    batch_size: int = 512
    threads: int = 2
    threads_batch: int = 2
    kv_type: str = "f16"
    flash_attn: bool | None = None  # None: llama.cpp decides (auto)
    max_queue: int = 64  # requests that may wait for a slot (the scheduler's, not llama.cpp's)

    # One KV buffer shared by all slots: a batch mixing several sequences then runs as one ubatch
    # (split streams force llama.cpp into equal splits, several graph runs per step), and slots can
    # share a prefix's cells. Each sequence is still capped at `ctx` tokens by the scheduler, so
    # ctx x parallel cells always suffice. The price: attention sums over a sequence's cells in the
    # order they lie in the shared buffer, which other sequences' traffic decides, so the last bits
    # of the logits (and, at a near tie, a greedy token) can depend on concurrent load. False gives
    # each sequence its own stream: results independent of other traffic, no prefix sharing.
    kv_unified: bool = True
    # Sliding-window models (Gemma 3...) keep every position's KV, not just the window: a reused
    # prefix cut back to an earlier position then still has the cells its window needs
    # (llama-server saves that memory and re-processes or restores checkpoints instead).
    swa_full = True

    def __post_init__(self) -> None:
        problem = kv_type_problem(self.kv_type, self.flash_attn)
        if problem:
            raise ValueError(problem)

    @property
    def n_ctx(self) -> int:
        """llama.cpp's n_ctx: every sequence gets `ctx` tokens."""
        return self.ctx * self.parallel

    @property
    def kv_cells(self) -> int:
        """The cells llama.cpp allocates: n_ctx padded; one stream holds them all (unified)."""
        return pad_cells(self.n_ctx)

    @property
    def attention_cells(self) -> int:
        """The KV length one micro-batch attends over when the compute buffer is sized: with a
        unified cache the mask (and without flash attention the scores) spans every cell."""
        return self.kv_cells if self.kv_unified else pad_cells(self.ctx)

    @property
    def n_batch(self) -> int:
        # llama.cpp caps the logical batch at the (unpadded) context for causal models
        return min(max(self.batch_size, self.parallel), self.n_ctx)

    @property
    def n_ubatch(self) -> int:
        return min(self.n_batch, MAX_UBATCH)

    def fill(self, params: Any) -> Any:
        """Write these settings onto a `llama_cpp.llama_context_params`; returns it."""
        params.n_ctx = self.n_ctx
        params.n_seq_max = self.parallel
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_ubatch
        params.n_threads = self.threads
        params.n_threads_batch = self.threads_batch
        params.kv_unified = self.kv_unified
        params.swa_full = self.swa_full
        params.no_perf = True
        params.type_k = params.type_v = KV_CACHE_TYPES[self.kv_type].ggml_type
        # llama_flash_attn_type: -1 auto, 0 disabled, 1 enabled
        params.flash_attn_type = -1 if self.flash_attn is None else int(self.flash_attn)
        return params
