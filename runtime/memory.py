"""Memory arithmetic of a llama.cpp model on a device: KV cache, compute buffers, margins.

Pure functions of the architecture numbers. They follow what llama.cpp allocates:
- KV cache: every layer stores K and V rows of `kv_heads x head_dim` elements for every cell;
  the cells and the KV type come from the ContextSettings serve runs with (context x parallel
  sequences, padded to 256 like llama.cpp's n_ctx, in one unified stream).
- compute buffer: the graph allocator reuses memory, so the peak is the largest live set of one
  micro-batch: the logits (n_ubatch x vocab floats) on the device holding the output layer, the
  gated FFN activations, or the attention scores without flash attention (n_ubatch x cells x heads
  floats); plus what stays live through the whole graph: the f16 attention mask (n_ubatch x cells;
  with the unified KV cache serve runs, the cells of all sequences) and the residual stream.
  Checked against llama.cpp's reported KV and compute buffer sizes for the tiny test models
  (tests/engine/test_context_settings.py: KV exactly, compute within 20 %, within 1 % with flash
  attention); for Hermes-sized models the logits term dominates.
"""

from __future__ import annotations

import math

from hermesd.models.catalog import Variant, WeightLayout
from hermesd.runtime.engine.context_settings import KV_CACHE_TYPES, ContextSettings

MIB = 1024 * 1024
GIB = 1024 * MIB


def kv_row_bytes(kv_type: str, elements: int) -> int:
    kind = KV_CACHE_TYPES[kv_type]
    return math.ceil(elements / kind.block_elements) * kind.block_bytes


def kv_bytes_per_layer(variant: Variant, cells: int, kv_type: str) -> int:
    """K and V of one layer for `cells` tokens."""
    return 2 * kv_row_bytes(kv_type, variant.kv_heads * variant.head_dim) * cells


def kv_bytes(variant: Variant, settings: ContextSettings) -> int:
    """The KV cache llama.cpp allocates for these settings, all layers (equal to its "KV buffer size")."""
    return variant.layers * kv_bytes_per_layer(variant, settings.kv_cells, settings.kv_type)


def draft_model_bytes(draft: Variant, layout: WeightLayout, settings: ContextSettings) -> int:
    """What a draft model adds beside the model (serve --draft-model): its weights, a KV cache of the
    same cells as the model's (a sequence per slot), and a compute buffer of its own context."""
    return layout.total + kv_bytes(draft, settings) + compute_bytes(draft, settings, with_output=True)


def compute_bytes(variant: Variant, settings: ContextSettings, *, with_output: bool) -> int:
    """The compute buffer of one device for these settings; flash attention "auto" counts as on,
    which is what llama.cpp's auto picks where the backend supports it."""
    return compute_buffer_bytes(
        variant,
        n_ubatch=settings.n_ubatch,
        cells=settings.attention_cells,
        flash_attn=settings.flash_attn is not False,
        with_output=with_output,
    )


def compute_buffer_bytes(
    variant: Variant, *, n_ubatch: int, cells: int, flash_attn: bool, with_output: bool
) -> int:
    """Peak compute buffer of one device; `cells` is the KV length one micro-batch attends over."""
    f32 = 4
    # gate, up and their product, with the normed input and the residual alive
    ffn = n_ubatch * (3 * variant.intermediate_size + 2 * variant.hidden_size) * f32
    if flash_attn:  # Q, K, V views of the batch and the attention output
        attention = n_ubatch * (3 * variant.heads * variant.head_dim + 2 * variant.hidden_size) * f32
    else:  # KQ scores in f32, and their softmax
        attention = n_ubatch * cells * (variant.heads * f32 + 2)
    logits = n_ubatch * (variant.vocab_size + variant.hidden_size) * f32 if with_output else 0
    mask = n_ubatch * cells * 2  # f16 KQ mask, an input of every layer
    residual = n_ubatch * variant.hidden_size * f32
    return max(ffn, attention, logits) + mask + residual


def host_buffer_bytes(variant: Variant, *, n_ubatch: int) -> int:
    """The CPU-side staging buffer when every layer is on a GPU (inputs, embeddings of a batch)."""
    return 2 * n_ubatch * variant.hidden_size * 4


def largest_layer_tensor_bytes(variant: Variant, layer_bytes: int) -> int:
    """One FFN matrix of a layer: llama.cpp copies CPU-resident weights of this size to the GPU to
    run big prompt batches there (op offload), so a partly offloaded GPU needs room for one."""
    share = variant.hidden_size * variant.intermediate_size / variant.layer_params()
    return math.ceil(layer_bytes * share)


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"
