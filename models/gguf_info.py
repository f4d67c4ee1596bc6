"""What a local GGUF holds: architecture numbers and the bytes of every tensor, per layer.

The numbers come from the validating reader (gguf_validate), across all shards of a split file;
nothing here opens a file. The planner uses `layout()` instead of the catalog's estimate when the
file is local.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from gguf import LlamaFileType

from hermesd.models.catalog import Variant, WeightLayout, quant_from_filename
from hermesd.models.gguf_split import SplitSetIncomplete, shard_paths
from hermesd.models.gguf_validate import GGUFSummary, GGUFValidationError, KVValue, validate_gguf

log = logging.getLogger(__name__)

_LAYER_RE = re.compile(r"^blk\.(\d+)\.")

# A file that is not a valid GGUF model, or a split set with a missing part; names the file.
GgufError = GGUFValidationError


@dataclass(frozen=True)
class GgufInfo:
    paths: tuple[Path, ...]
    arch: str
    name: str | None
    file_type: str | None  # "Q4_K_M", ... from general.file_type, else from the file name
    block_count: int
    context_length: int | None
    embedding_length: int | None
    head_count: int | None
    head_count_kv: int | None
    key_length: int | None
    value_length: int | None
    feed_forward_length: int | None
    vocab_size: int | None
    layer_bytes: tuple[int, ...]
    token_embd_bytes: int
    output_bytes: int  # 0 when the output shares the token embedding (then llama.cpp duplicates it)
    other_bytes: int
    tied_embeddings: bool
    file_bytes: int

    @property
    def tensor_bytes(self) -> int:
        return sum(self.layer_bytes) + self.token_embd_bytes + self.output_bytes + self.other_bytes

    def layout(self) -> WeightLayout:
        """Per-layer bytes for the planner. Tied embeddings: llama.cpp loads token_embd a second
        time as the output layer, so count it twice."""
        output = self.token_embd_bytes if self.tied_embeddings else self.output_bytes
        return WeightLayout(self.layer_bytes, self.token_embd_bytes, output, self.other_bytes, "gguf")

    def as_variant(self, variant_id: str = "local") -> Variant:
        """The architecture numbers in the catalog's shape, for the planner's arithmetic."""
        heads = self.head_count or 1
        hidden = self.embedding_length or 0
        return Variant(
            id=variant_id,
            name=self.name or self.paths[0].name,
            arch=self.arch,
            size_rank=0,
            layers=self.block_count,
            hidden_size=hidden,
            heads=heads,
            kv_heads=self.head_count_kv or heads,
            head_dim=self.key_length or hidden // heads,
            intermediate_size=self.feed_forward_length or 4 * hidden,
            vocab_size=self.vocab_size or 0,
            context_max=self.context_length or 0,
            tied_embeddings=self.tied_embeddings,
            quants=(),
        )


def read_gguf_info(path: Path) -> GgufInfo:
    """Metadata and per-layer tensor bytes of `path` (any shard of a split set), validated."""
    try:
        first = shard_paths(path)[0]
    except SplitSetIncomplete as exc:
        raise GgufError(path, str(exc).removeprefix(f"{path}: ")) from None
    return gguf_info(validate_gguf(first, kind="model"))


def gguf_info(summary: GGUFSummary) -> GgufInfo:
    """The planner's view of a validated model."""
    arch = summary.architecture or ""
    num = summary.arch_int
    blocks = num("block_count")
    if blocks is None:
        raise GgufError(summary.path, f"no {arch}.block_count key")
    per_layer = [0] * blocks
    token_embd = output = other = 0
    names = set()
    for t in summary.tensors:
        names.add(t.name)
        m = _LAYER_RE.match(t.name)
        if m and int(m.group(1)) < blocks:
            per_layer[int(m.group(1))] += t.nbytes
        elif t.name == "token_embd.weight":
            token_embd += t.nbytes
        elif t.name == "output.weight":
            output += t.nbytes
        else:
            other += t.nbytes
    file_type = file_type_name(summary.kv.get("general.file_type")) or quant_from_filename(summary.path.name)
    return GgufInfo(
        paths=summary.shards,
        arch=arch,
        name=summary.name,
        file_type=file_type,
        block_count=blocks,
        context_length=num("context_length"),
        embedding_length=num("embedding_length"),
        head_count=num("attention.head_count"),
        head_count_kv=num("attention.head_count_kv"),
        key_length=num("attention.key_length"),
        value_length=num("attention.value_length"),
        feed_forward_length=num("feed_forward_length"),
        vocab_size=summary.token_count or num("vocab_size"),
        layer_bytes=tuple(per_layer),
        token_embd_bytes=token_embd,
        output_bytes=output,
        other_bytes=other,
        tied_embeddings="output.weight" not in names,
        file_bytes=summary.file_size,
    )


def file_type_name(value: KVValue | None) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    try:
        name = LlamaFileType(value).name  # e.g. MOSTLY_Q4_K_M, ALL_F32
    except ValueError:
        return None
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")
