"""The base model a run trains on: where its weights come from, and which GGUF it will serve as.

`--base` is one of:
- a GGUF file (the one being served): weights are dequantized by transformers' GGUF loader, so the
  adapter learns on exactly the weights it will run on; the same file gives the tokenizer (llama.cpp's,
  so training ids are serving ids), the chat format and the fingerprint recorded in the adapter;
- a local Hugging Face folder (config.json + weights);
- a hub repo id (`NousResearch/Hermes-4-14B`), fetched by transformers into its cache.
For the last two, `--base-gguf` names the GGUF the adapter will be served on (tokenizer, format,
fingerprint); without it the folder's own tokenizer is used and no fingerprint is recorded.

torch/transformers are imported inside functions only: `hermesd serve` never imports them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hermesd.models.gguf_validate import GGUFSummary, GGUFValidationError, looks_like_gguf, validate_gguf
from hermesd.models.gguf_write import ARCHS
from hermesd.runtime.errors import HermesdError
from hermesd.runtime.tune.render import ChatFormat, Tokenizer

log = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
BaseKind = Literal["gguf", "hf-dir", "hub"]


class TuneError(HermesdError):
    """A problem the user can fix (bad flag, missing file, unsupported model); no traceback."""


@dataclass(frozen=True)
class BaseSpec:
    kind: BaseKind
    ref: str  # path or hub id, as given
    gguf: Path | None  # the GGUF the adapter is for (tokenizer, chat format, fingerprint)

    @property
    def label(self) -> str:
        return str(self.gguf or self.ref)


def resolve_base(base: str, base_gguf: Path | None = None) -> BaseSpec:
    path = Path(base).expanduser()
    if base_gguf is not None and not looks_like_gguf(base_gguf):
        raise TuneError(f"--base-gguf {base_gguf}: not a GGUF file")
    if path.is_file():
        if not looks_like_gguf(path):
            raise TuneError(f"--base {base}: not a GGUF file (it does not start with the GGUF magic bytes)")
        return BaseSpec("gguf", str(path), base_gguf or path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TuneError(f"--base {base}: a folder without config.json is not a Hugging Face model")
        return BaseSpec("hf-dir", str(path), base_gguf)
    if HUB_ID.match(base) and not base.startswith((".", "/")):
        return BaseSpec("hub", base, base_gguf)
    raise TuneError(f"--base {base}: no such file or folder, and not a hub id of the form owner/name")


def read_base_gguf(path: Path, *, fingerprint: bool = False) -> GGUFSummary:
    """The base model GGUF, validated (nothing reads it before this), and what it declares."""
    try:
        return validate_gguf(path, kind="model", fingerprint=fingerprint)
    except GGUFValidationError as exc:
        raise TuneError(f"refusing a damaged or hostile base model file: {exc}") from None


def model_name(summary: GGUFSummary) -> str:
    return summary.name or summary.basename or summary.path.stem


def check_architecture(arch: str, where: str) -> str:
    if arch not in ARCHS:
        raise TuneError(
            f"{where}: architecture {arch!r} is not supported for adapters "
            f"(supported: {', '.join(sorted(ARCHS))})"
        )
    return arch


@dataclass
class TokenizerBundle:
    """The tokenizer and chat format training uses, and the identity recorded in the adapter."""

    tokenizer: Tokenizer
    chat_format: ChatFormat
    fingerprint: str | None
    base_name: str
    closer: Any = None  # something with close(), released when training no longer needs it

    def close(self) -> None:
        if self.closer is not None:
            self.closer.close()
            self.closer = None


def gguf_tokenizer(path: Path) -> TokenizerBundle:
    """llama.cpp's own tokenizer for the served GGUF (a vocab-only load: no weights in memory)."""
    from hermesd.runtime.engine.llama_model import LlamaModel, LlamaModelConfig

    summary = read_base_gguf(path, fingerprint=True)
    vocab = LlamaModel(LlamaModelConfig(path=path, vocab_only=True))
    fmt = ChatFormat.detect(
        vocab.metadata, vocab.chat_template(), vocab.token_text(vocab.bos_id), vocab.token_text(vocab.eos_id)
    )
    return TokenizerBundle(vocab, fmt, summary.fingerprint, model_name(summary), closer=vocab)


class HFTokenizer:
    """A transformers tokenizer behind the `Tokenizer` protocol (bases with no GGUF)."""

    def __init__(self, tok: Any) -> None:
        self._tok = tok
        self.eos_id = int(tok.eos_token_id)
        self.bos_id = tok.bos_token_id
        self._eog = {self.eos_id}
        for text in ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>"):
            tid = tok.convert_tokens_to_ids(text)
            if isinstance(tid, int) and tid >= 0 and tid != tok.unk_token_id:
                self._eog.add(tid)

    def tokenize(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        ids: list[int] = list(self._tok.encode(text, add_special_tokens=False))
        want = bool(getattr(self._tok, "add_bos_token", False)) if add_bos is None else add_bos
        if want and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids.insert(0, int(self.bos_id))
        return ids

    def is_eog(self, token: int) -> bool:
        return token in self._eog


def hf_tokenizer(ref: str) -> TokenizerBundle:
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ref)
    config = AutoConfig.from_pretrained(ref)
    name = str(getattr(config, "_name_or_path", "") or ref)
    meta = {"general.name": Path(name).name, "general.architecture": config.model_type}
    fmt = ChatFormat.detect(meta, tok.chat_template, tok.bos_token or "", tok.eos_token or "")
    return TokenizerBundle(HFTokenizer(tok), fmt, None, Path(name).name)


def tokenizer_for(spec: BaseSpec) -> TokenizerBundle:
    if spec.gguf is not None:
        return gguf_tokenizer(spec.gguf)
    log.warning(
        "no GGUF given for %s: using its Hugging Face tokenizer and recording no base fingerprint; "
        "hermesd serve refuses adapters without one (pass --base-gguf with the served file)",
        spec.ref,
    )
    return hf_tokenizer(spec.ref)


def model_architecture(spec: BaseSpec) -> str:
    """The GGUF architecture name the adapter is written for (checked before any training)."""
    if spec.gguf is not None:
        summary = read_base_gguf(spec.gguf)
        arch = check_architecture(summary.architecture or "", str(spec.gguf))
        if spec.kind == "gguf":  # its weights are what trains: refused now, not after the plan
            check_gguf_weights_loadable(summary, spec.gguf)
        return arch
    from transformers import AutoConfig

    return check_architecture(str(AutoConfig.from_pretrained(spec.ref).model_type), spec.ref)


def load_hf_model(spec: BaseSpec, load_kwargs: dict[str, Any]) -> Any:
    """The transformers model to put the LoRA on. `load_kwargs` come from the device plan."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the CLI shows its own progress; tqdm bars would garble it
    if spec.kind != "gguf":
        return AutoModelForCausalLM.from_pretrained(spec.ref, **load_kwargs)
    path = Path(spec.ref)
    # validated before transformers' GGUF loader reads it
    summary = read_base_gguf(path)
    check_gguf_weights_loadable(summary, path)
    key_length = summary.arch_int("attention.key_length")
    rope = gguf_llama3_rope(path, summary)
    config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    # transformers' GGUF config mapping ignores `<arch>.attention.key_length`, so a model whose head
    # size is not hidden/heads (Qwen 3's explicit head_dim) gets the config class default instead.
    if key_length is not None and hasattr(config, "head_dim"):
        config.head_dim = key_length
    # ...and it ignores the `rope_freqs` tensor, Llama 3.1's `rope_scaling: llama3`: without this the
    # adapter would learn on other positions than llama.cpp serves it on.
    if rope is not None:
        config.rope_parameters = rope
    with _quiet_gguf_progress():
        return AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, config=config, **load_kwargs
        )


@contextmanager
def _quiet_gguf_progress() -> Iterator[None]:
    """transformers' GGUF loader draws a tqdm bar of its own (not behind its progress-bar switch),
    which would cut through the CLI's output; silence it for the load."""
    from functools import partial

    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return
    gguf_utils.tqdm = partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def check_gguf_weights_loadable(summary: GGUFSummary, path: Path) -> None:
    """TuneError (one line) when transformers' GGUF loader cannot read this architecture's weights
    (Seed-OSS, Hermes 4.3): such a model trains on its Hugging Face weights, with the GGUF as
    `--base-gguf` for the tokenizer and the identity the adapter records."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    arch = summary.architecture or ""
    if arch in GGUF_SUPPORTED_ARCHITECTURES:
        return
    from hermesd.models.catalog import CatalogError, load_catalog

    try:  # the catalog names each variant's Hugging Face repo
        variant = load_catalog().variant_of_file(path.name, arch, summary.arch_int("block_count"))
    except CatalogError:
        variant = None
    hf = variant.hf_repo if variant is not None and variant.hf_repo else "<its Hugging Face repo>"
    raise TuneError(
        f"--base {path}: transformers cannot read {arch} weights from a GGUF; train on the Hugging Face "
        f"weights and name this file as the served one (--base {hf} --base-gguf {path})"
    )


def gguf_llama3_rope(path: Path, summary: GGUFSummary) -> dict[str, Any] | None:
    """The `rope_type: llama3` parameters that reproduce the GGUF's `rope_freqs` factors (how
    llama.cpp's converter stores Llama 3.1's scaling), or None for a GGUF without them.
    TuneError when no llama3 parameter set reproduces them."""
    from hermesd.models.gguf_validate import ROPE_FREQS_TENSOR, read_vocabulary
    from hermesd.models.pairing import llama3_parameters

    try:
        freqs = read_vocabulary(path).rope_freqs
    except GGUFValidationError as exc:
        raise TuneError(f"refusing a damaged or hostile base model file: {exc}") from None
    if freqs is None:
        return None
    theta = summary.arch_value("rope.freq_base")
    theta = float(theta) if isinstance(theta, int | float) else 10000.0
    hidden, heads = summary.arch_int("embedding_length"), summary.arch_int("attention.head_count")
    dim = (
        summary.arch_int("rope.dimension_count")
        or summary.arch_int("attention.key_length")
        or (hidden // heads if hidden and heads else 0)
    )
    rope = llama3_parameters(freqs, theta, dim)
    if rope is None:
        raise TuneError(
            f"--base {path}: its {ROPE_FREQS_TENSOR} factors match no llama3 RoPE scaling, so its positions "
            f"cannot be reproduced in training; train on the Hugging Face weights (--base-gguf {path})"
        )
    return rope
