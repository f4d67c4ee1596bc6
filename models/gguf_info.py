"""What a local GGUF holds: architecture numbers and the bytes of every tensor, per layer.

Reads headers with the `gguf` package's memory-mapped reader (tensor data is never read), across
all shards of a split file. The planner uses `layout()` instead of the catalog's estimate when the
file is local.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hermesd.models.catalog import Variant, WeightLayout, quant_from_filename, split_info

log = logging.getLogger(__name__)

_LAYER_RE = re.compile(r"^blk\.(\d+)\.")
_SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


class GgufError(ValueError):
    """A file that is not a readable GGUF (or a split set with a missing part); names the file."""


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


def shard_paths(path: Path) -> tuple[Path, ...]:
    """All parts of a split GGUF given any part (or the file itself when not split)."""
    info = split_info(path.name)
    if info is None:
        return (path,)
    _, count = info
    stem = _SHARD_RE.sub("", path.name)
    parts = tuple(path.with_name(f"{stem}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1))
    missing = [p.name for p in parts if not p.exists()]
    if missing:
        raise GgufError(f"{path}: split GGUF is incomplete; missing {', '.join(missing)}")
    return parts


def read_gguf_info(path: Path) -> GgufInfo:
    """Metadata and per-layer tensor bytes of `path` (any shard of a split set)."""
    from gguf import GGUFReader  # imported here: the reader pulls numpy, not needed by most commands

    paths = shard_paths(path)
    fields: dict[str, Any] = {}
    tensors: list[tuple[str, int]] = []
    for p in paths:
        try:
            reader = GGUFReader(p, "r")
        except (OSError, ValueError, IndexError) as exc:
            raise GgufError(f"{p}: not a readable GGUF file ({exc})") from exc
        for key, field in reader.fields.items():
            if key not in fields and not key.startswith("tokenizer.ggml."):
                try:
                    fields[key] = field.contents()
                except (ValueError, IndexError, UnicodeDecodeError):
                    continue
            elif key in ("tokenizer.ggml.tokens",) and "vocab_size" not in fields:
                fields["vocab_size"] = len(field.data)
        tensors.extend((t.name, int(t.n_bytes)) for t in reader.tensors)
    return _summarise(paths, fields, tensors)


def _summarise(paths: Sequence[Path], fields: dict[str, Any], tensors: list[tuple[str, int]]) -> GgufInfo:
    arch = str(fields.get("general.architecture", ""))
    if not arch:
        raise GgufError(f"{paths[0]}: no general.architecture key: not a model GGUF")

    def num(key: str) -> int | None:
        value = fields.get(f"{arch}.{key}")
        if isinstance(value, list):  # per-layer arrays (e.g. head_count_kv): take the largest
            value = max(value) if value else None
        return int(value) if value is not None else None

    blocks = num("block_count")
    if blocks is None:
        raise GgufError(f"{paths[0]}: no {arch}.block_count key")
    per_layer = [0] * blocks
    token_embd = output = other = 0
    names = set()
    for name, size in tensors:
        names.add(name)
        m = _LAYER_RE.match(name)
        if m and int(m.group(1)) < blocks:
            per_layer[int(m.group(1))] += size
        elif name == "token_embd.weight":
            token_embd += size
        elif name == "output.weight":
            output += size
        else:
            other += size
    file_type = _file_type(fields.get("general.file_type")) or quant_from_filename(paths[0].name)
    return GgufInfo(
        paths=tuple(paths),
        arch=arch,
        name=fields.get("general.name"),
        file_type=file_type,
        block_count=blocks,
        context_length=num("context_length"),
        embedding_length=num("embedding_length"),
        head_count=num("attention.head_count"),
        head_count_kv=num("attention.head_count_kv"),
        key_length=num("attention.key_length"),
        value_length=num("attention.value_length"),
        feed_forward_length=num("feed_forward_length"),
        vocab_size=fields.get("vocab_size") or num("vocab_size"),
        layer_bytes=tuple(per_layer),
        token_embd_bytes=token_embd,
        output_bytes=output,
        other_bytes=other,
        tied_embeddings="output.weight" not in names,
        file_bytes=sum(p.stat().st_size for p in paths),
    )


def _file_type(value: Any) -> str | None:
    if value is None:
        return None
    from gguf import LlamaFileType

    try:
        name = LlamaFileType(int(value)).name  # e.g. MOSTLY_Q4_K_M, ALL_F32
    except ValueError:
        return None
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")
