"""The hyper-parameter rules llama.cpp applies when it loads a model, checked before it does.

A GGUF file can be well-formed and still carry numbers llama.cpp refuses: some with a C++ exception
(a clean load error), many with `GGML_ASSERT`, which aborts the whole process, at load time, when the
first context is created, or at the first decode. Every rule here mirrors one check of the llama.cpp
vendored in llama-cpp-python 0.3.36 (paths under vendor/llama.cpp/), named next to it:

- `llama_model_base::load_hparams` (src/llama-model.cpp) for the keys of every architecture;
- `llama_model_loader::get_key` / `get_key_or_arr` / `get_arr` (src/llama-model-loader.cpp) for the
  types and the per-layer array lengths;
- `llama_model_<arch>::load_arch_hparams`, `load_arch_tensors` and the graph constructors
  (src/models/<arch>.cpp) for the architectures hermesd serves (llama, qwen3, seed_oss) and common
  ones a user may serve with its own template (qwen2, gemma3);
- the CPU kernels (ggml/src/ggml-cpu/ops.cpp) for values that only fail at compute time.

The limits are llama.cpp's own: LLAMA_MAX_LAYERS and LLAMA_MAX_EXPERTS (src/llama-hparams.h).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from gguf import GGUFValueType

LLAMA_MAX_LAYERS = 512  # src/llama-hparams.h
LLAMA_MAX_EXPERTS = 1024  # src/llama-hparams.h
ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")  # LLAMA_ROPE_SCALING_TYPES, llama-model.cpp

U32, I32, F32 = GGUFValueType.UINT32, GGUFValueType.INT32, GGUFValueType.FLOAT32
BOOL, STR, ARRAY = GGUFValueType.BOOL, GGUFValueType.STRING, GGUFValueType.ARRAY
# Item types get_arr accepts for a per-layer std::array<uint32_t> (llama-model-loader.cpp); INT32
# items are copied bit for bit, so a negative one becomes a count of about four billion.
LAYER_ITEM_TYPES = (U32, I32, BOOL)
# Keys read with get_key_or_arr: one uint32 for all layers, or an array with one item per layer.
PER_LAYER_KEYS = (
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "expert_used_count",
)
SWA_PATTERN_KEY = "attention.sliding_window_pattern"
# Suffixes whose arrays the validator reads in full (up to LLAMA_MAX_LAYERS items) for these rules.
ARRAY_KEYS = (*PER_LAYER_KEYS, SWA_PATTERN_KEY)

Scalar = int | float | bool | str


@dataclass(frozen=True)
class Field:
    """One key of the file as the rules see it.

    `value` is the scalar, or every item of an array (None when the array was too long to read).
    """

    type: GGUFValueType
    value: Scalar | tuple[Scalar, ...] | None
    item_type: GGUFValueType | None = None
    length: int = 1


class HParamError(ValueError):
    """A hyper-parameter llama.cpp would refuse or abort on; str() is the problem."""


@dataclass(frozen=True)
class Key:
    """A scalar read with llama_model_loader::get_key: the type must match exactly (else it throws)."""

    suffix: str
    type: GGUFValueType
    required: bool = False  # get_key(..., required=true) throws "key not found in model"
    low: int | float | None = None
    high: int | float | None = None
    unit: str = ""  # what the value counts, for the message ("layers")


# --- llama_model_base::load_hparams (src/llama-model.cpp), every architecture --------------------
COMMON_KEYS = (
    # n_ctx_train 0: llama_init_from_model refuses "n_ctx and n_ctx_train cannot both be zero"
    # (llama-context.cpp) for the default context, and hermesd's planner fits nothing into 0 tokens.
    Key("context_length", U32, required=True, low=1, unit="tokens"),
    # n_embd 0: every weight would need a dimension of 0 (load_arch_tensors throws "wrong shape").
    Key("embedding_length", U32, required=True, low=1, unit="values per embedding"),
    Key("embedding_length_out", U32),
    Key("attention.causal", BOOL),
    Key("pooling_type", U32),
    Key("classifier.pooling_type", U32),
    # GGML_ASSERT(hparams.n_layer_all > 0 && hparams.n_layer_all <= LLAMA_MAX_LAYERS)
    Key("block_count", U32, required=True, low=1, high=LLAMA_MAX_LAYERS, unit="layers"),
    Key("nextn_predict_layers", U32),  # GGML_ASSERT(n_layer_nextn <= n_layer_all): see _check_layers
    # GGML_ASSERT(hparams.n_expert <= LLAMA_MAX_EXPERTS)
    Key("expert_count", U32, high=LLAMA_MAX_EXPERTS, unit="experts"),
    Key("expert_group_count", U32),
    Key("expert_group_used_count", U32),
    Key("rope.scaling.finetuned", BOOL),
    Key("rope.scaling.original_context_length", U32),
    Key("rope.freq_base", F32),
    Key("rope.scaling.type", STR),  # GGML_ASSERT(rope_scaling_type_train != UNSPECIFIED): see below
    Key("rope.scaling.factor", F32),
    Key("rope.scale_linear", F32),
    Key("rope.scaling.attn_factor", F32),
    Key("rope.scaling.alpha", F32),
    Key("attention.key_length", U32),
    Key("attention.value_length", U32),
    Key("rope.dimension_count", U32),
    Key("attention.key_length_swa", U32),
    Key("attention.value_length_swa", U32),
    Key("rope.dimension_count_swa", U32),
)

# --- llama_model_<arch>::load_arch_hparams (src/models/<arch>.cpp) ---------------------------------
# A negative (or NaN) epsilon passes loading and aborts the first decode:
# GGML_ASSERT(eps >= 0.0f) in ggml_compute_forward_rms_norm_f32 (ggml/src/ggml-cpu/ops.cpp).
RMS_EPS = Key("attention.layer_norm_rms_epsilon", F32, required=True, low=0.0)
ARCH_KEYS: dict[str, tuple[Key, ...]] = {
    "llama": (Key("vocab_size", U32), RMS_EPS),
    "qwen2": (RMS_EPS,),
    "qwen3": (RMS_EPS,),
    "seed_oss": (RMS_EPS,),
    "gemma3": (
        Key("attention.sliding_window", U32),
        Key("rope.freq_base_swa", F32),
        Key("final_logit_softcapping", F32),
        RMS_EPS,
    ),
}
# Architectures whose graph builder asserts n_embd_head_v == n_embd_head_k and n_embd_head == n_rot
# (the graph constructors in src/models/{llama,qwen2,qwen3,seed-oss}.cpp): it runs when the first
# context is created, so a mismatch aborts the daemon at start-up.
EQUAL_HEAD_SIZES = frozenset({"llama", "qwen2", "qwen3", "seed_oss"})
# Architectures whose q and o weights are n_embd wide (src/models/qwen2.cpp load_arch_tensors), so
# that n_embd_head_k * n_head must be n_embd: build_qkv reshapes Q to {n_embd_head, n_head} and
# ggml_reshape_3d asserts GGML_ASSERT(ggml_nelements(a) == ne0*ne1*ne2) when the context is created.
EMBEDDING_WIDE_QUERY = frozenset({"qwen2"})
# load_hparams sets n_expert and every n_expert_used to 0 for these when n_expert <= 1.
EXPERTS_DROPPED_BELOW_2 = frozenset({"hunyuan-dense", "hunyuan_vl"})


def check_hparams(arch: str, fields: Mapping[str, Field]) -> None:
    """Raise HParamError naming the first key of `arch` that llama.cpp would refuse or abort on.

    `fields` holds the file's keys (at least those under `<arch>.`).
    """
    c = _Checker(arch, fields)
    for key in (*COMMON_KEYS, *ARCH_KEYS.get(arch, ())):
        c.scalar(key)
    n_layer = c.uint("block_count")
    layers = {suffix: c.per_layer(suffix, n_layer) for suffix in PER_LAYER_KEYS}
    _check_layers(c, n_layer)
    _check_experts(c, layers["expert_used_count"])
    _check_rope_scaling(c)
    if arch == "gemma3":
        c.swa_pattern()
    if arch in ARCH_KEYS:
        _check_attention_shapes(c, layers)


# --- the rules that relate keys --------------------------------------------------------------------


def _check_layers(c: _Checker, n_layer: int) -> None:
    # load_hparams: GGML_ASSERT(hparams.n_layer_nextn <= hparams.n_layer_all)
    nextn = c.uint("nextn_predict_layers")
    if nextn > n_layer:
        raise c.error(
            f"{c.key('nextn_predict_layers')} is {nextn}, more than the {n_layer} layers of "
            f"{c.key('block_count')}; llama.cpp needs 0 to {n_layer}"
        )


def _check_experts(c: _Checker, used: list[int] | None) -> None:
    """load_hparams: the GGML_ASSERTs on n_expert, n_expert_used_max(), n_expert_groups, n_group_used."""
    n_expert = c.uint("expert_count")
    if c.arch in EXPERTS_DROPPED_BELOW_2 and n_expert <= 1:
        n_expert, used = 0, None
    used_max = max(used) if used else 0
    used_key, count_key = c.key("expert_used_count"), c.key("expert_count")
    groups, group_used = c.uint("expert_group_count"), c.uint("expert_group_used_count")
    groups_key, group_used_key = c.key("expert_group_count"), c.key("expert_group_used_count")
    if n_expert == 0:
        if used_max:  # GGML_ASSERT(n_expert_used_max == 0)
            raise c.error(
                f"{used_key} is {used_max} but the model has no experts ({count_key} is "
                f"{'0' if count_key in c.fields else 'missing'}); llama.cpp needs {used_key} 0 "
                "without experts"
            )
        if groups:  # GGML_ASSERT(hparams.n_expert_groups == 0)
            raise c.error(f"{groups_key} is {groups} but the model has no experts; llama.cpp needs 0")
        return
    if used_max > n_expert:  # GGML_ASSERT(n_expert_used_max <= hparams.n_expert)
        raise c.error(
            f"{used_key} is {used_max}, more than the {n_expert} experts of {count_key}; "
            f"llama.cpp needs 1 to {n_expert}"
        )
    if used_max == 0:  # GGML_ASSERT(n_expert_used_max > 0)
        found = "missing" if used is None else "0"
        raise c.error(
            f"{used_key} is {found} but {count_key} is {n_expert}; llama.cpp needs 1 to {n_expert} "
            "experts used per token"
        )
    if groups >= n_expert:  # GGML_ASSERT(hparams.n_expert_groups < hparams.n_expert)
        raise c.error(f"{groups_key} is {groups}; llama.cpp needs fewer groups than the {n_expert} experts")
    if groups > 1:
        if n_expert % groups:  # GGML_ASSERT(hparams.n_expert % hparams.n_expert_groups == 0)
            raise c.error(
                f"{groups_key} is {groups}, which does not divide the {n_expert} experts of {count_key}"
            )
        if not 0 < group_used < groups:  # GGML_ASSERT(n_group_used > 0 && n_group_used < n_expert_groups)
            raise c.error(f"{group_used_key} is {group_used}; llama.cpp needs 1 to {groups - 1}")


def _check_rope_scaling(c: _Checker) -> None:
    # load_hparams: GGML_ASSERT(hparams.rope_scaling_type_train != LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED)
    field = c.fields.get(c.key("rope.scaling.type"))
    if field is not None and field.value not in ROPE_SCALING_TYPES:
        raise c.error(
            f"{c.key('rope.scaling.type')} is {field.value!r}; llama.cpp knows only "
            + ", ".join(repr(t) for t in ROPE_SCALING_TYPES)
        )


def _check_attention_shapes(c: _Checker, layers: Mapping[str, list[int] | None]) -> None:
    """Head counts and head sizes of the attention architectures in ARCH_KEYS.

    load_hparams derives the head size from n_embd / n_head(0) unless attention.key_length /
    value_length give it, and n_rot from rope.dimension_count; load_arch_tensors then expects
    q/k/v/o weights of n_embd_head_k * n_head(_kv) rows, so a head count of 0, a count of KV heads that
    does not divide the query heads or a head size that does not come out whole makes a tensor
    "wrong shape" (a load error) or trips ggml's broadcast asserts when the graph is built.
    """
    heads_key, kv_key = c.key("attention.head_count"), c.key("attention.head_count_kv")
    ff_key = c.key("feed_forward_length")
    heads = layers["attention.head_count"]
    if heads is None:
        raise c.error(
            f"{heads_key} is missing; a {c.arch} model needs 1 or more attention heads in every layer"
        )
    kv_heads = layers["attention.head_count_kv"] or heads  # load_hparams: n_head_kv defaults to n_head
    ff = layers["feed_forward_length"]
    for i, (n_head, n_kv) in enumerate(zip(heads, kv_heads, strict=True)):
        if n_head < 1:
            raise c.error(
                f"{heads_key} is 0{c.where(heads_key, i)}; llama.cpp needs 1 or more attention heads"
            )
        if n_kv < 1 or n_head % n_kv:
            raise c.error(
                f"{kv_key} is {n_kv}{c.where(kv_key, i)}, which does not divide the {n_head} query heads of "
                f"{heads_key}; llama.cpp needs a divisor of {n_head}"
            )
    if ff is None or min(ff) < 1:
        found = "missing" if ff is None else f"0{c.where(ff_key, ff.index(0))}"
        raise c.error(f"{ff_key} is {found}; llama.cpp needs a feed-forward length of 1 or more")
    n_embd, n_head = c.uint("embedding_length"), heads[0]
    head_k = _head_size(c, "attention.key_length", n_embd, n_head)
    head_v = _head_size(c, "attention.value_length", n_embd, n_head)
    if c.arch in EMBEDDING_WIDE_QUERY and head_k * n_head != n_embd:
        raise c.error(
            f"{c.key('attention.key_length')} {head_k} times {heads_key} {n_head} is {head_k * n_head}, "
            f"not {c.key('embedding_length')} {n_embd}; llama.cpp's {c.arch} graph needs them equal"
        )
    n_rot = c.uint("rope.dimension_count", head_k)
    _check_rope_dims(c, "rope.dimension_count", n_rot, "attention.key_length", head_k)
    if c.arch in EQUAL_HEAD_SIZES:
        if head_v != head_k:  # graph: GGML_ASSERT(n_embd_head == hparams.n_embd_head_k())
            raise c.error(
                f"{c.key('attention.value_length')} is {head_v} but the key head size is {head_k}; "
                f"llama.cpp's {c.arch} graph needs equal key and value head sizes"
            )
        if n_rot != head_k:  # graph: GGML_ASSERT(n_embd_head == n_rot); llama: "invalid n_rot" at load
            raise c.error(
                f"{c.key('rope.dimension_count')} is {n_rot} but the head size is {head_k}; "
                f"llama.cpp's {c.arch} model needs them equal"
            )
    else:  # SWA layers take their own head size and n_rot, defaulting to the full ones (load_hparams)
        head_k_swa = c.uint("attention.key_length_swa", head_k)
        if head_k_swa < 1:
            raise c.error(
                f"{c.key('attention.key_length_swa')} is 0; llama.cpp needs a head size of 1 or more"
            )
        n_rot_swa = c.uint("rope.dimension_count_swa", n_rot)
        _check_rope_dims(c, "rope.dimension_count_swa", n_rot_swa, "attention.key_length_swa", head_k_swa)


def _head_size(c: _Checker, suffix: str, n_embd: int, n_head: int) -> int:
    key = c.key(suffix)
    if key in c.fields:
        size = c.uint(suffix)
        if size < 1:
            raise c.error(f"{key} is 0; llama.cpp needs a head size of 1 or more")
        return size
    if n_embd % n_head:
        raise c.error(
            f"{c.key('embedding_length')} {n_embd} is not divisible by {c.key('attention.head_count')} "
            f"{n_head} and {key} is missing: llama.cpp derives the head size as {n_embd}/{n_head}, "
            "which must be whole"
        )
    return n_embd // n_head


def _check_rope_dims(c: _Checker, rot_suffix: str, n_rot: int, head_suffix: str, head: int) -> None:
    # ggml_compute_forward_rope (ggml/src/ggml-cpu/ops.cpp): GGML_ASSERT(n_dims <= ne0) and
    # GGML_ASSERT(n_dims % 2 == 0), at the first decode
    if n_rot > head or n_rot % 2:
        rot_key = c.key(rot_suffix)
        what = rot_key if rot_key in c.fields else f"{rot_key} (missing, so the default)"
        raise c.error(
            f"{what} is {n_rot}; llama.cpp's rope needs an even number of dimensions, "
            f"at most the head size {head} ({c.key(head_suffix)})"
        )


# --- reading the fields ------------------------------------------------------------------------------


class _Checker:
    def __init__(self, arch: str, fields: Mapping[str, Field]) -> None:
        self.arch, self.fields = arch, fields

    def key(self, suffix: str) -> str:
        return f"{self.arch}.{suffix}"

    @staticmethod
    def error(problem: str) -> HParamError:
        return HParamError(problem)

    def where(self, key: str, layer: int) -> str:
        field = self.fields.get(key)
        return f" for layer {layer}" if field is not None and field.type == ARRAY else ""

    def uint(self, suffix: str, default: int = 0) -> int:
        """A uint32 key already checked by scalar(); `default` when it is absent."""
        field = self.fields.get(self.key(suffix))
        if field is None:
            return default
        assert isinstance(field.value, int)  # checked by scalar()
        return field.value

    def scalar(self, rule: Key) -> None:
        key = self.key(rule.suffix)
        field = self.fields.get(key)
        if field is None:
            if rule.required:
                raise self.error(f"{key} is missing; llama.cpp needs it to load a {self.arch} model")
            return
        if field.type != rule.type:  # GKV<T>::get_kv throws "key ... has wrong type"
            raise self.error(
                f"{key} is {_type_name(field)}; llama.cpp reads it only as a {rule.type.name.lower()}"
            )
        value = field.value
        if isinstance(value, float) and math.isnan(value):
            raise self.error(f"{key} is NaN; llama.cpp needs a number{_range(rule)}")
        if not isinstance(value, int | float) or isinstance(value, bool):
            return
        if (rule.low is not None and value < rule.low) or (rule.high is not None and value > rule.high):
            raise self.error(f"{key} is {value}; llama.cpp needs{_range(rule)}")

    def per_layer(self, suffix: str, n_layer: int) -> list[int] | None:
        """llama_model_loader::get_key_or_arr: a uint32 for every layer, or one item per layer."""
        key = self.key(suffix)
        field = self.fields.get(key)
        if field is None:
            return None
        if field.type != ARRAY:
            self.scalar(Key(suffix, U32))
            return [self.uint(suffix)] * n_layer
        if field.length != n_layer:  # throws "key %s has wrong array length; expected %u, got %u"
            raise self.error(
                f"{key} has {field.length} items but {self.key('block_count')} is {n_layer}; "
                "llama.cpp needs one item per layer"
            )
        return self._layer_items(key, field)

    def _layer_items(self, key: str, field: Field) -> list[int]:
        if field.item_type not in LAYER_ITEM_TYPES:  # get_arr throws "has wrong array element type"
            raise self.error(
                f"{key} is an array of {_item_name(field)}; llama.cpp reads per-layer values only from "
                "uint32, int32 or bool arrays"
            )
        items = field.value
        if not isinstance(items, tuple):
            raise self.error(
                f"{key} has {field.length} items, more than the {LLAMA_MAX_LAYERS} layers llama.cpp supports"
            )
        values = [int(v) for v in items]
        negative = next((i for i, v in enumerate(values) if v < 0), None)
        if negative is not None:
            raise self.error(
                f"{key} is {values[negative]} for layer {negative}; llama.cpp reads it as an unsigned count "
                f"of {values[negative] % 2**32}"
            )
        return values

    def swa_pattern(self) -> None:
        """llama_model_base::load_swa_pattern: get_arr into std::array<uint32_t, LLAMA_MAX_LAYERS>
        (throws above LLAMA_MAX_LAYERS items or on another item type), else a uint32."""
        key = self.key(SWA_PATTERN_KEY)
        field = self.fields.get(key)
        if field is None:
            return
        if field.type != ARRAY:
            self.scalar(Key(SWA_PATTERN_KEY, U32))
            return
        self._layer_items(key, field)


def _range(rule: Key) -> str:
    unit = f" {rule.unit}" if rule.unit else ""
    if rule.low is not None and rule.high is not None:
        return f" {rule.low} to {rule.high}{unit}"
    if rule.low is not None:
        return f" {rule.low} or more{unit}"
    if rule.high is not None:
        return f" at most {rule.high}{unit}"
    return ""


def _type_name(field: Field) -> str:
    if field.type == ARRAY:
        return f"an array of {_item_name(field)}"
    name = field.type.name.lower()
    return f"{'an' if name.startswith('int') else 'a'} {name}"


def _item_name(field: Field) -> str:
    return field.item_type.name.lower() if field.item_type is not None else "unknown items"
