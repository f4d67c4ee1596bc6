"""Validate an untrusted GGUF file in Python before llama.cpp ever opens it.

llama.cpp's own GGUF loader has had out-of-bounds reads and unbounded allocations from declared
counts, lengths and offsets (CVE-2024-23496, CVE-2025-49847, CVE-2026-27940; Ollama's "Bleeding
Llama"). This module is a small, careful parser of the header, the key/value section and the tensor
table. It trusts no declared number: every count and length is checked against a fixed limit and
against the bytes left in the file *before* anything is read or kept, and the tensor data itself is
never read (only its declared position), so a multi-GB model costs a few header reads and bounded
memory. `gguf.GGUFReader` is not used for this: it maps declared sizes straight into numpy arrays.

This is hermesd's only GGUF reader: the same pass that validates a file returns what every caller
needs from it (architecture and hyper-parameters, chat template, every tensor's shape and size, the
vocabulary's size, the shards of a split model and the base fingerprint adapters are matched by);
`gguf_info`, `identity`, `gguf_lora` and the tune code ask it instead of opening files themselves.

The rules follow llama.cpp's `gguf_init_from_file` and model loader (the limits that matter to it,
such as 63-byte tensor names, 1-4 dimensions and tensors packed in order), plus a few of our own
(sane counts, known types, no empty dimensions, an adapter's required keys). A model's
hyper-parameters (layer, head and expert counts, head sizes, ...) must also pass the rules of
`gguf_hparams`, which mirror the checks llama.cpp makes with `GGML_ASSERT` or exceptions.

Special files: the path is `stat`ed first (following symlinks, since the Hugging Face cache links
snapshots to blobs) and anything but a regular file is refused before it is opened, so a FIFO, a
directory or `/dev/zero` behind a symlink is never read. The file is then opened with O_NONBLOCK and
`fstat`ed again, and must be the same regular file (a swap between the two calls is refused).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from hermesd.models.gguf_hparams import ARRAY_KEYS, LLAMA_MAX_LAYERS, Field, HParamError, check_hparams
from hermesd.models.gguf_split import parse_split_name

logger = logging.getLogger(__name__)

# Limits. Real files stay far below them: Hermes 4 405B has ~1,100 tensors and ~40 keys, vocabularies
# hold up to ~260k tokens, chat templates are a few KiB.
MAX_TENSORS = 65_536
MAX_KEYS = 65_536
MAX_KEY_BYTES = 65_535  # the GGUF spec's limit for key names
MAX_STRING_BYTES = 16 << 20
MAX_ARRAY_ITEMS = 1 << 24
MAX_TENSOR_NAME_BYTES = 63  # llama.cpp: GGML_MAX_NAME (64) including the terminating NUL
MAX_DIMS = 4  # llama.cpp: GGML_MAX_DIMS
MAX_ALIGNMENT = 1 << 20
MAX_CHAT_TEMPLATE_BYTES = 1 << 20
MAX_SHARDS = 1024
DEFAULT_ALIGNMENT = 32
# What a summary keeps: strings and arrays larger than this are summarised by type and length.
KEEP_STRING_BYTES = 64 << 10
KEEP_ARRAY_ITEMS = 64

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
CHAT_TEMPLATE_KEY = "tokenizer.chat_template"
TOKENS_KEY = "tokenizer.ggml.tokens"
_READ_CHUNK = 1 << 20
# Smallest possible encodings, used to check declared counts against the bytes left.
_MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, a 1-byte key, value type, a 1-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8  # name length, name, n_dims, one dim, type, offset

_SCALAR_FORMATS: dict[GGUFValueType, struct.Struct] = {
    GGUFValueType.UINT8: struct.Struct("<B"),
    GGUFValueType.INT8: struct.Struct("<b"),
    GGUFValueType.UINT16: struct.Struct("<H"),
    GGUFValueType.INT16: struct.Struct("<h"),
    GGUFValueType.UINT32: struct.Struct("<I"),
    GGUFValueType.INT32: struct.Struct("<i"),
    GGUFValueType.FLOAT32: struct.Struct("<f"),
    GGUFValueType.BOOL: struct.Struct("<B"),
    GGUFValueType.UINT64: struct.Struct("<Q"),
    GGUFValueType.INT64: struct.Struct("<q"),
    GGUFValueType.FLOAT64: struct.Struct("<d"),
}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

Kind = Literal["model", "adapter"]
Scalar = int | float | bool | str


class GGUFValidationError(ValueError):
    """A GGUF file that must not be given to llama.cpp; str() is "<path>: <problem>"."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


@dataclass(frozen=True)
class GGUFOmitted:
    """A value too large to keep in a summary (a vocabulary, a long string): its type and length."""

    value_type: str
    length: int


KVValue = Scalar | tuple[Scalar, ...] | GGUFOmitted


@dataclass(frozen=True)
class GGUFTensor:
    """A tensor as the file's table declares it (its data is never read)."""

    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the length of a row
    ggml_type: GGMLQuantizationType
    offset: int  # relative to the start of the data section of its shard
    nbytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class GGUFSummary:
    """What a validated file declares. For a split model: the first shard's keys, all shards' sizes
    and tensors.

    `kv` keeps every key but the chat template; long strings and arrays are GGUFOmitted, except the
    per-layer arrays of the architecture's keys, kept whole. `fingerprint` is the base fingerprint
    of a model when the caller asked for it (see `_fingerprint`), else None.
    """

    path: Path
    version: int
    architecture: str | None
    name: str | None
    basename: str | None
    general_type: str | None
    tensor_count: int
    kv: dict[str, KVValue]
    chat_template: str | None
    file_size: int
    shards: tuple[Path, ...] = field(default=())
    tensors: tuple[GGUFTensor, ...] = field(default=())
    token_count: int | None = None  # the items of tokenizer.ggml.tokens
    fingerprint: str | None = None

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    def arch_value(self, key: str) -> KVValue | None:
        """`<architecture>.<key>`, e.g. arch_value("block_count")."""
        return self.kv.get(f"{self.architecture}.{key}")

    def arch_int(self, key: str) -> int | None:
        """A numeric `<architecture>.<key>`; of a per-layer array (head_count_kv of a model with
        layers of several kinds), the largest item."""
        value = self.arch_value(key)
        if isinstance(value, tuple):
            value = max((v for v in value if isinstance(v, int | float)), default=None)
        return int(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class _Parsed:
    version: int
    kv: dict[str, KVValue]
    tensors: tuple[GGUFTensor, ...]
    file_size: int
    arch_fields: dict[str, Field]  # the `<general.architecture>.*` keys, for the hyper-parameter rules
    token_count: int | None
    fingerprint: str | None
    arrays: dict[str, _Array] = field(default_factory=dict)  # where each array's items are
    data_start: int = 0  # byte position of the tensor data section


@dataclass(frozen=True)
class _Array:
    item_type: GGUFValueType
    count: int
    items_at: int  # byte position of the first item


def validate_gguf(
    path: Path | str,
    *,
    kind: Kind = "model",
    max_file_bytes: int | None = None,
    fingerprint: bool = False,
) -> GGUFSummary:
    """Check a GGUF model or LoRA adapter; raise GGUFValidationError naming the file and the problem.

    A split model is checked shard by shard; `path` must be its first shard (`-00001-of-0000N.gguf`).
    `max_file_bytes` caps the size of each file. `fingerprint` also computes a model's base
    fingerprint (hashing the vocabulary costs ~0.1 s for 150k tokens, so only callers that need it
    ask).
    """
    path = Path(path)
    first = _parse_file(path, max_file_bytes, fingerprint=fingerprint and kind == "model")
    shard_files = [(path, first)]
    if "split.count" in first.kv:
        shard_files = _check_split(path, first, kind, max_file_bytes)
    tensors = tuple(t for _, parsed in shard_files for t in parsed.tensors)
    total_size = sum(parsed.file_size for _, parsed in shard_files)
    _check_kind(path, first, kind)
    if kind == "model":
        _check_hparams(path, first)
    per_layer = {
        k: f.value
        for k, f in first.arch_fields.items()
        if f.type == GGUFValueType.ARRAY and f.value is not None
    }
    kv = first.kv | per_layer
    template = kv.get(CHAT_TEMPLATE_KEY)
    summary = GGUFSummary(
        path=path,
        version=first.version,
        architecture=_str_or_none(kv.get("general.architecture")),
        name=_str_or_none(kv.get("general.name")),
        basename=_str_or_none(kv.get("general.basename")),
        general_type=_str_or_none(kv.get("general.type")),
        tensor_count=len(tensors),
        kv={k: v for k, v in kv.items() if k != CHAT_TEMPLATE_KEY},
        chat_template=template if isinstance(template, str) else None,
        file_size=total_size,
        shards=tuple(p for p, _ in shard_files),
        tensors=tensors,
        token_count=first.token_count,
        fingerprint=first.fingerprint,
    )
    logger.debug("validated %s: %d tensors, %d bytes", path, len(tensors), total_size)
    return summary


def base_fingerprint(path: Path | str) -> str:
    """The identity of the base model at `path` that adapters record (see `_fingerprint`): it survives
    re-quantization but not a different model. The file is validated as a model first."""
    return cast(str, validate_gguf(path, kind="model", fingerprint=True).fingerprint)


TOKEN_TYPES_KEY = "tokenizer.ggml.token_type"
ROPE_FREQS_TENSOR = "rope_freqs.weight"
_MAX_ROPE_FREQS = 4096


@dataclass(frozen=True)
class GGUFVocabulary:
    """What a model's pairing with its Hugging Face original needs beyond `GGUFSummary`: every token's
    text and type (`gguf.TokenType`), and the per-frequency RoPE factors of a `rope_freqs.weight`
    tensor (llama.cpp's converter writes Llama 3.1's `rope_scaling: llama3` as that tensor), or None."""

    tokens: tuple[str, ...]
    token_types: tuple[int, ...] | None
    rope_freqs: tuple[float, ...] | None


def read_vocabulary(path: Path | str) -> GGUFVocabulary:
    """The vocabulary and RoPE factors of a model GGUF, which is validated first (`path`: its first
    shard). Only the vocabulary arrays and the small `rope_freqs` tensor (float32, at most 4096 items)
    are read; its bounds were checked by the same parse."""
    summary = validate_gguf(path, kind="model")
    path = Path(path)
    fd, size = _open_regular_file(path, None)
    try:
        r = _Reader(path, fd, size)
        parsed = _parse(r, False)
        tokens_array = parsed.arrays.get(TOKENS_KEY)
        tokens: list[str] = []
        if tokens_array is not None and tokens_array.item_type == GGUFValueType.STRING:
            tokens = r.strings(tokens_array)
        types_array = parsed.arrays.get(TOKEN_TYPES_KEY)
        types = None
        if types_array is not None and types_array.item_type in _SCALAR_FORMATS:
            types = tuple(int(v) for v in r.items_at(types_array))
    finally:
        os.close(fd)
    return GGUFVocabulary(tuple(tokens), types, _rope_freqs(summary))


def _rope_freqs(summary: GGUFSummary) -> tuple[float, ...] | None:
    for shard in summary.shards or (summary.path,):
        fd, size = _open_regular_file(shard, None)
        try:
            r = _Reader(shard, fd, size)
            parsed = _parse(r, False)
            tensor = next((t for t in parsed.tensors if t.name == ROPE_FREQS_TENSOR), None)
            if tensor is None:
                continue
            if tensor.ggml_type != GGMLQuantizationType.F32 or tensor.n_elements > _MAX_ROPE_FREQS:
                raise r.fail(f"{ROPE_FREQS_TENSOR} is not a short float32 vector")
            r.pos = parsed.data_start + tensor.offset  # inside the file: _check_tensor_data said so
            data = r.raw(tensor.nbytes, ROPE_FREQS_TENSOR)
            return struct.unpack(f"<{tensor.n_elements}f", data)
        finally:
            os.close(fd)
    return None


def looks_like_gguf(path: Path) -> bool:
    """Whether `path` is a regular file that starts with the GGUF magic (to tell a GGUF argument from
    a folder or a hub id; validate_gguf decides whether it may be used)."""
    try:
        fd, _ = _open_regular_file(path, None)
    except GGUFValidationError:
        return False
    try:
        return os.pread(fd, len(GGUF_MAGIC), 0) == GGUF_MAGIC
    finally:
        os.close(fd)


def _str_or_none(value: KVValue | None) -> str | None:
    return value if isinstance(value, str) else None


# --- reading ---------------------------------------------------------------------------------------


class _Reader:
    """Bounded reads from a file descriptor: nothing is read past the size taken at open time."""

    def __init__(self, path: Path, fd: int, size: int) -> None:
        self.path, self.fd, self.size = path, fd, size
        self.pos = 0
        self._buf = b""
        self._buf_start = 0

    def fail(self, problem: str) -> GGUFValidationError:
        return GGUFValidationError(self.path, problem)

    @property
    def left(self) -> int:
        return self.size - self.pos

    def _view(self, n: int, what: str) -> int:
        """Make n bytes at pos available in the buffer; return their index in it and advance."""
        if n > self.left:
            raise self.fail(
                f"the file is cut short: {what} needs {n} bytes at byte {self.pos}, "
                f"but the file has {self.size} bytes"
            )
        start = self.pos - self._buf_start
        if start < 0 or start + n > len(self._buf):
            self._buf = os.pread(self.fd, max(n, _READ_CHUNK), self.pos)
            self._buf_start, start = self.pos, 0
            if len(self._buf) < n:
                raise self.fail(f"the file shrank while being read (at byte {self.pos})")
        self.pos += n
        return start

    def unpack(self, fmt: struct.Struct, what: str) -> int | float:
        start = self._view(fmt.size, what)
        value: int | float = fmt.unpack_from(self._buf, start)[0]
        return value

    def u32(self, what: str) -> int:
        return int(self.unpack(_U32, what))

    def u64(self, what: str) -> int:
        return int(self.unpack(_U64, what))

    def raw(self, n: int, what: str) -> bytes:
        start = self._view(n, what)
        return self._buf[start : start + n]

    def items_at(self, array: _Array) -> tuple[Scalar, ...]:
        """Every item of a numeric array already walked over (so known to lie inside the file)."""
        fmt = struct.Struct(f"<{array.count}{_SCALAR_FORMATS[array.item_type].format[-1]}")
        data = os.pread(self.fd, fmt.size, array.items_at)
        if len(data) < fmt.size:
            raise self.fail(f"the file shrank while being read (at byte {array.items_at})")
        return cast(tuple[Scalar, ...], fmt.unpack(data))

    def strings(self, array: _Array) -> list[str]:
        """Every item of a string array already walked over (so known to lie inside the file)."""
        self.pos = array.items_at
        out: list[str] = []
        for i in range(array.count):
            what = f"item {i} of the array at byte {array.items_at}"
            n = self.string_length(what, MAX_STRING_BYTES, "16 MiB")
            out.append(self.raw(n, what).decode("utf-8", errors="replace"))
        return out

    def hash_strings(self, array: _Array, h: Any) -> None:
        """Feed each item of a string array already walked over (so known to lie inside the file) to
        the hash `h`, each followed by a NUL byte. Items are hashed in batches: a vocabulary of 150k
        tokens takes about 0.1 s, and memory stays bounded whatever the array's length."""
        self.pos = array.items_at
        batch: list[bytes] = []
        for i in range(array.count):
            if len(batch) == 4096:
                h.update(b"\0".join(batch) + b"\0")
                batch.clear()
            start = self.pos - self._buf_start
            if 0 <= start <= len(self._buf) - 8:  # the fast path, as in skip_strings
                n = _U64.unpack_from(self._buf, start)[0]
                if start + 8 + n <= len(self._buf):
                    batch.append(self._buf[start + 8 : start + 8 + n])
                    self.pos += 8 + n
                    continue
            what = f"item {i} of {TOKENS_KEY}"
            batch.append(self.raw(self.string_length(what, MAX_STRING_BYTES, "16 MiB"), what))
        if batch:
            h.update(b"\0".join(batch) + b"\0")

    def skip(self, n: int, what: str) -> None:
        if n > self.left:
            raise self.fail(
                f"the file is cut short: {what} needs {n} bytes at byte {self.pos}, "
                f"but the file has {self.size} bytes"
            )
        self.pos += n

    def skip_strings(self, count: int, what: str, first: int = 0) -> None:
        """Walk over `count` strings (a vocabulary) without keeping them.

        The fast path reads each length straight from the buffer; anything unusual (the end of the
        buffer, a length over the limit or past the end of the file) takes the checked path, which
        refills the buffer or raises with a full message.
        """
        for i in range(first, first + count):
            start = self.pos - self._buf_start
            if 0 <= start <= len(self._buf) - 8:
                n = _U64.unpack_from(self._buf, start)[0]
                if n <= MAX_STRING_BYTES and self.pos + 8 + n <= self.size:
                    self.pos += 8 + n
                    continue
            item = f"item {i} of {what}"
            self.skip(self.string_length(item, MAX_STRING_BYTES, "16 MiB"), item)

    def string_length(self, what: str, limit: int, limit_name: str) -> int:
        n = self.u64(f"the length of {what}")
        if n > limit:
            raise self.fail(f"{what} is a string of {n} bytes, longer than the limit of {limit_name}")
        if n > self.left:
            raise self.fail(
                f"{what} is a string of {n} bytes at byte {self.pos}, which runs past the end of the file "
                f"(the file has {self.size} bytes)"
            )
        return n


def _parse_file(path: Path, max_file_bytes: int | None, *, fingerprint: bool = False) -> _Parsed:
    fd, size = _open_regular_file(path, max_file_bytes)
    try:
        return _parse(_Reader(path, fd, size), fingerprint)
    finally:
        os.close(fd)


def _open_regular_file(path: Path, max_file_bytes: int | None) -> tuple[int, int]:
    try:
        before = os.stat(path)
    except FileNotFoundError:
        raise GGUFValidationError(path, "no such file") from None
    except OSError as exc:
        raise GGUFValidationError(path, f"cannot read it ({exc.strerror})") from None
    if not stat.S_ISREG(before.st_mode):
        raise GGUFValidationError(path, f"not a regular file (it is {_file_kind(before.st_mode)})")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise GGUFValidationError(path, f"cannot open it ({exc.strerror})") from None
    opened = os.fstat(fd)
    if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
        os.close(fd)
        raise GGUFValidationError(path, "the file was replaced while it was being opened")
    if max_file_bytes is not None and opened.st_size > max_file_bytes:
        os.close(fd)
        raise GGUFValidationError(
            path, f"the file has {opened.st_size} bytes, more than the limit of {max_file_bytes} bytes"
        )
    return fd, opened.st_size


def _file_kind(mode: int) -> str:
    kinds = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _parse(r: _Reader, fingerprint: bool) -> _Parsed:
    magic = r.raw(4, "the magic")
    if magic != GGUF_MAGIC:
        raise r.fail(f"not a GGUF file: it starts with {magic!r} instead of {GGUF_MAGIC!r}")
    version = r.u32("the version")
    if version not in SUPPORTED_VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if swapped in SUPPORTED_VERSIONS:
            raise r.fail(
                f"a big-endian GGUF file (version {swapped}); llama.cpp here reads little-endian only"
            )
        raise r.fail(f"GGUF version {version} is not supported (only versions 2 and 3 are)")
    n_tensors = r.u64("the tensor count")
    if n_tensors > MAX_TENSORS:
        raise r.fail(f"the tensor count {n_tensors} is more than the limit of {MAX_TENSORS}")
    n_kv = r.u64("the key/value count")
    if n_kv > MAX_KEYS:
        raise r.fail(f"the key/value count {n_kv} is more than the limit of {MAX_KEYS}")
    needed = n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES
    if needed > r.left:
        raise r.fail(
            f"the header declares {n_tensors} tensors and {n_kv} keys, which need at least {needed} bytes "
            f"after byte {r.pos}, but the file has {r.size} bytes"
        )
    kv, types, arrays = _read_kv_section(r, n_kv)
    alignment = _alignment(r, kv, types)
    tensors = _read_tensor_infos(r, n_tensors)
    data_start = _align(r.pos, alignment) if n_tensors else r.pos
    _check_tensor_data(r, tensors, data_start, alignment)
    fields = _arch_fields(r, kv, types, arrays)
    tokens = arrays.get(TOKENS_KEY)
    return _Parsed(
        version=version,
        kv=kv,
        tensors=tensors,
        file_size=r.size,
        arch_fields=fields,
        token_count=tokens.count if tokens else None,
        fingerprint=_fingerprint(r, kv, tensors, tokens) if fingerprint else None,
        arrays=arrays,
        data_start=data_start,
    )


def _fingerprint(
    r: _Reader, kv: dict[str, KVValue], tensors: tuple[GGUFTensor, ...], tokens: _Array | None
) -> str:
    """A base model's identity: the architecture, every tensor's name and shape (not its type, so
    Q4_K_M and Q8_0 of one model agree) and the vocabulary, hashed in that order.

    The value must never change: adapters record it. It is what hermesd computed with
    `gguf.GGUFReader` before this parser read it, so it covers the tensors of this file only (for a
    split model, those of the first shard).
    """
    arch = kv.get("general.architecture")
    arch_name = arch if isinstance(arch, str) else ""
    h = hashlib.sha256(arch_name.encode())
    for t in sorted(tensors, key=lambda t: t.name):
        h.update(t.name.encode())
        h.update(",".join(str(d) for d in t.shape).encode())
    if tokens is not None and tokens.item_type == GGUFValueType.STRING:
        r.hash_strings(tokens, h)
    return f"{arch_name}-{h.hexdigest()[:32]}"


def _align(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def _value_type(r: _Reader, raw: int, what: str) -> GGUFValueType:
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise r.fail(f"{what} has unknown value type {raw}") from None


def _name(r: _Reader, raw: bytes, what: str) -> str:
    """A key or tensor name: UTF-8 without control characters (a NUL would cut it short in C)."""
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise r.fail(f"the name of {what} is not valid UTF-8: {raw!r}") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise r.fail(f"the name of {what} contains a control character: {name!r}")
    return name


def _read_kv_section(
    r: _Reader, n_kv: int
) -> tuple[dict[str, KVValue], dict[str, GGUFValueType], dict[str, _Array]]:
    kv: dict[str, KVValue] = {}
    types: dict[str, GGUFValueType] = {}
    arrays: dict[str, _Array] = {}
    for i in range(n_kv):
        key_len = r.string_length(f"the name of key {i}", MAX_KEY_BYTES, f"{MAX_KEY_BYTES} bytes")
        if key_len == 0:
            raise r.fail(f"key {i} has an empty name")
        key = _name(r, r.raw(key_len, f"the name of key {i}"), f"key {i}")
        if key in kv:
            raise r.fail(f"key '{key}' appears more than once")
        what = f"key '{key}'"
        vtype = _value_type(r, r.u32(f"the value type of {what}"), what)
        kv[key] = _read_value(r, key, vtype, arrays)
        types[key] = vtype
    return kv, types, arrays


def _read_value(r: _Reader, key: str, vtype: GGUFValueType, arrays: dict[str, _Array]) -> KVValue:
    what = f"key '{key}'"
    if vtype == GGUFValueType.ARRAY:
        return _read_array(r, what, key, arrays)
    if vtype == GGUFValueType.STRING:
        if key == CHAT_TEMPLATE_KEY:
            n = r.string_length(what, MAX_CHAT_TEMPLATE_BYTES, "1 MiB for a chat template")
            try:
                return r.raw(n, what).decode("utf-8")
            except UnicodeDecodeError:
                raise r.fail(f"{what} (the chat template) is not valid UTF-8") from None
        n = r.string_length(what, MAX_STRING_BYTES, "16 MiB")
        if n > KEEP_STRING_BYTES:
            r.skip(n, what)
            return GGUFOmitted("string", n)
        return r.raw(n, what).decode("utf-8", errors="replace")
    return _read_scalar(r, vtype, f"the value of {what}")


def _read_scalar(r: _Reader, vtype: GGUFValueType, what: str) -> Scalar:
    value = r.unpack(_SCALAR_FORMATS[vtype], what)
    if vtype == GGUFValueType.BOOL:
        if value not in (0, 1):
            raise r.fail(f"{what} is a bool stored as {value} (must be 0 or 1)")
        return bool(value)
    return value


def _read_array(r: _Reader, what: str, key: str, arrays: dict[str, _Array]) -> KVValue:
    item_type = _value_type(r, r.u32(f"the item type of {what}"), f"{what} (an array)")
    if item_type == GGUFValueType.ARRAY:
        raise r.fail(f"{what} is an array of arrays, which llama.cpp cannot read")
    count = r.u64(f"the length of {what}")
    arrays[key] = _Array(item_type, count, r.pos)
    if count > MAX_ARRAY_ITEMS:
        raise r.fail(f"{what} is an array of {count} items, longer than the limit of {MAX_ARRAY_ITEMS}")
    item_size = 8 if item_type == GGUFValueType.STRING else _SCALAR_FORMATS[item_type].size
    if count * item_size > r.left:
        raise r.fail(
            f"{what} is an array of {count} {item_type.name.lower()} items, which needs at least "
            f"{count * item_size} bytes from byte {r.pos}, but the file has {r.size} bytes"
        )
    keep = count <= KEEP_ARRAY_ITEMS
    if item_type == GGUFValueType.STRING:
        items = _read_string_items(r, what, count, keep)
    elif keep:
        items = [_read_scalar(r, item_type, f"an item of {what}") for _ in range(count)]
    else:
        r.skip(count * item_size, what)
        items = None
    if items is None:
        return GGUFOmitted(f"array[{item_type.name.lower()}]", count)
    return tuple(items)


def _read_string_items(r: _Reader, what: str, count: int, keep: bool) -> list[Scalar] | None:
    if not keep:
        r.skip_strings(count, what)
        return None
    items: list[Scalar] = []
    for i in range(count):
        item = f"item {i} of {what}"
        n = r.string_length(item, MAX_STRING_BYTES, "16 MiB")
        if n > KEEP_STRING_BYTES:
            r.skip(n, item)
            r.skip_strings(count - i - 1, what, first=i + 1)
            return None
        items.append(r.raw(n, item).decode("utf-8", errors="replace"))
    return items


def _alignment(r: _Reader, kv: dict[str, KVValue], types: dict[str, GGUFValueType]) -> int:
    if "general.alignment" not in kv:
        return DEFAULT_ALIGNMENT
    vtype = types["general.alignment"]
    if vtype != GGUFValueType.UINT32:  # llama.cpp refuses any other type
        raise r.fail(f"general.alignment must be a uint32, not {vtype.name.lower()}")
    value = cast(int, kv["general.alignment"])  # a uint32 was read as a Python int
    if value <= 0 or value & (value - 1) or value > MAX_ALIGNMENT:
        raise r.fail(f"general.alignment is {value}; it must be a power of two from 1 to {MAX_ALIGNMENT}")
    return value


def _arch_fields(
    r: _Reader, kv: dict[str, KVValue], types: dict[str, GGUFValueType], arrays: dict[str, _Array]
) -> dict[str, Field]:
    """The keys of the file's architecture as the hyper-parameter rules see them.

    A summary keeps arrays of up to KEEP_ARRAY_ITEMS items; the per-layer arrays the rules need (one
    item per layer, up to LLAMA_MAX_LAYERS) are read again in full from their recorded position.
    """
    arch = kv.get("general.architecture")
    if not isinstance(arch, str):
        return {}
    prefix = f"{arch}."
    fields: dict[str, Field] = {}
    for key, value in kv.items():
        if not key.startswith(prefix):
            continue
        if key not in arrays:
            fields[key] = Field(types[key], None if isinstance(value, GGUFOmitted) else cast(Scalar, value))
            continue
        array = arrays[key]
        items: tuple[Scalar, ...] | None = value if isinstance(value, tuple) else None
        if (
            items is None
            and key.removeprefix(prefix) in ARRAY_KEYS
            and array.item_type in _SCALAR_FORMATS
            and array.count <= LLAMA_MAX_LAYERS
        ):
            items = r.items_at(array)
        fields[key] = Field(GGUFValueType.ARRAY, items, array.item_type, array.count)
    return fields


def _check_hparams(path: Path, parsed: _Parsed) -> None:
    """Refuse hyper-parameters llama.cpp would reject or abort the process on (see gguf_hparams)."""
    arch = parsed.kv["general.architecture"]
    assert isinstance(arch, str)  # _check_kind refused a model without one
    try:
        check_hparams(arch, parsed.arch_fields)
    except HParamError as exc:
        raise GGUFValidationError(path, str(exc)) from None


def _describe(value: KVValue | None) -> str:
    if value is None:
        return "missing"
    if isinstance(value, GGUFOmitted):
        return value.value_type
    if isinstance(value, tuple):
        return "an array"
    return type(value).__name__


def _read_tensor_infos(r: _Reader, n_tensors: int) -> tuple[GGUFTensor, ...]:
    tensors: list[GGUFTensor] = []
    seen: dict[str, int] = {}
    for i in range(n_tensors):
        name_len = r.string_length(f"the name of tensor {i}", MAX_TENSOR_NAME_BYTES, "63 bytes")
        if name_len == 0:
            raise r.fail(f"tensor {i} has an empty name")
        name = _name(r, r.raw(name_len, f"the name of tensor {i}"), f"tensor {i}")
        if name in seen:
            raise r.fail(f"tensor name '{name}' appears twice (tensors {seen[name]} and {i})")
        seen[name] = i
        tensors.append(_read_tensor_info(r, name))
    return tuple(tensors)


def _read_tensor_info(r: _Reader, name: str) -> GGUFTensor:
    what = f"tensor '{name}'"
    n_dims = r.u32(f"the dimension count of {what}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise r.fail(f"{what} has {n_dims} dimensions (must be 1 to {MAX_DIMS})")
    shape = tuple(r.u64(f"dimension {j} of {what}") for j in range(n_dims))
    for j, dim in enumerate(shape):
        if dim >= 1 << 63:
            raise r.fail(f"{what} dimension {j} is negative ({dim - (1 << 64)} as a signed 64-bit number)")
        if dim == 0:
            raise r.fail(f"{what} dimension {j} is 0 (must be at least 1)")
    elements = 1
    for dim in shape:
        elements *= dim
    if elements >= 1 << 63:
        raise r.fail(f"{what} has shape {shape}: {elements} elements do not fit in a signed 64-bit count")
    raw_type = r.u32(f"the type of {what}")
    try:
        ggml_type = GGMLQuantizationType(raw_type)
        block, type_size = GGML_QUANT_SIZES[ggml_type]
    except (ValueError, KeyError):
        raise r.fail(f"{what} has unknown ggml type {raw_type}") from None
    if shape[0] % block:
        raise r.fail(
            f"{what} of type {ggml_type.name} has rows of {shape[0]} elements, "
            f"not a multiple of its block size {block}"
        )
    offset = r.u64(f"the data offset of {what}")
    return GGUFTensor(name, shape, ggml_type, offset, elements // block * type_size)


def _check_tensor_data(r: _Reader, tensors: tuple[GGUFTensor, ...], data_start: int, alignment: int) -> None:
    for t in tensors:
        if t.offset % alignment:
            raise r.fail(
                f"tensor '{t.name}' starts at data offset {t.offset}, "
                f"which is not a multiple of the alignment {alignment}"
            )
        end = data_start + t.offset + t.nbytes
        if end > r.size:
            raise r.fail(f"tensor '{t.name}' data ends at byte {end} but the file has {r.size} bytes")
    by_offset = sorted(tensors, key=lambda t: t.offset)
    for a, b in itertools.pairwise(by_offset):
        if b.offset < a.offset + a.nbytes:
            raise r.fail(
                f"tensors '{a.name}' and '{b.name}' overlap: '{a.name}' covers bytes "
                f"{data_start + a.offset}-{data_start + a.offset + a.nbytes - 1} "
                f"and '{b.name}' starts at byte {data_start + b.offset}"
            )
    # llama.cpp (gguf_init_from_file) also insists on tensors packed in table order.
    expected = 0
    for t in tensors:
        if t.offset != expected:
            raise r.fail(
                f"tensor '{t.name}' starts at data offset {t.offset}, but llama.cpp needs {expected}: "
                "tensors must be stored in table order with only alignment padding between them"
            )
        expected += _align(t.nbytes, alignment)


# --- split models and kinds ----------------------------------------------------------------------


def _int_key(path: Path, kv: dict[str, KVValue], key: str) -> int:
    value = kv.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise GGUFValidationError(path, f"{key} must be an integer in a split model, not {_describe(value)}")
    return value


def _check_split(
    path: Path, first: _Parsed, kind: Kind, max_file_bytes: int | None
) -> list[tuple[Path, _Parsed]]:
    count = _int_key(path, first.kv, "split.count")
    if count == 1 and "split.no" not in first.kv:
        return [(path, first)]
    if kind == "adapter":
        raise GGUFValidationError(path, "a LoRA adapter cannot be split into shards")
    if not 1 <= count <= MAX_SHARDS:
        raise GGUFValidationError(path, f"split.count is {count} (must be 1 to {MAX_SHARDS})")
    number = _int_key(path, first.kv, "split.no")
    if number != 0:
        raise GGUFValidationError(
            path, f"this is shard {number + 1} of {count}; give the first shard (-00001-of-{count:05d}.gguf)"
        )
    split = parse_split_name(path.name)
    if split is None or split.part != 1 or split.count != count:
        raise GGUFValidationError(
            path,
            f"split.count says {count} shards but the file name does not end in -00001-of-{count:05d}.gguf",
        )
    shards = [(path, first)]
    for i in range(1, count):
        shard_path = path.with_name(split.part_name(i + 1))
        if not shard_path.exists():
            raise GGUFValidationError(path, f"shard {i + 1} of {count} is missing: {shard_path.name}")
        parsed = _parse_file(shard_path, max_file_bytes)
        if (
            _int_key(shard_path, parsed.kv, "split.no") != i
            or _int_key(shard_path, parsed.kv, "split.count") != count
        ):
            raise GGUFValidationError(
                shard_path, f"its split.no/split.count do not say shard {i + 1} of {count}"
            )
        shards.append((shard_path, parsed))
    _check_split_tensors(path, shards)
    return shards


def _check_split_tensors(path: Path, shards: list[tuple[Path, _Parsed]]) -> None:
    seen: dict[str, Path] = {}
    for shard_path, parsed in shards:
        for t in parsed.tensors:
            if t.name in seen:
                raise GGUFValidationError(
                    shard_path,
                    f"tensor '{t.name}' is also in {seen[t.name].name}; shards must not repeat tensors",
                )
            seen[t.name] = shard_path
    declared = _int_key(path, shards[0][1].kv, "split.tensors.count")
    if declared != len(seen):
        raise GGUFValidationError(
            path, f"split.tensors.count is {declared} but the shards hold {len(seen)} tensors"
        )


def _check_kind(path: Path, parsed: _Parsed, kind: Kind) -> None:
    kv = parsed.kv
    general_type = kv.get("general.type")
    if kind == "model":
        if general_type not in (None, "model"):
            raise GGUFValidationError(path, f"general.type is {general_type!r}, so this is not a model file")
        arch = kv.get("general.architecture")
        if not isinstance(arch, str) or not arch:
            raise GGUFValidationError(
                path, "general.architecture is missing: llama.cpp cannot tell what model it is"
            )
        return
    if general_type != "adapter":
        found = "missing" if general_type is None else f"{general_type!r}"
        raise GGUFValidationError(
            path, f"general.type is {found}; a LoRA adapter must have general.type = 'adapter'"
        )
    adapter_type = kv.get("adapter.type")
    if adapter_type != "lora":
        found = "missing" if adapter_type is None else f"{adapter_type!r}"
        raise GGUFValidationError(
            path, f"adapter.type is {found}; a LoRA adapter must have adapter.type = 'lora'"
        )
    _check_lora_tensors(path, parsed.tensors)


def _check_lora_tensors(path: Path, tensors: tuple[GGUFTensor, ...]) -> None:
    if not tensors:
        raise GGUFValidationError(path, "the adapter has no tensors")
    bases: dict[str, set[str]] = {}
    for t in tensors:
        base, dot, part = t.name.rpartition(".")
        if not dot or part not in ("lora_a", "lora_b"):
            raise GGUFValidationError(
                path, f"tensor '{t.name}' is not a LoRA tensor (names must end in .lora_a or .lora_b)"
            )
        bases.setdefault(base, set()).add(part)
    for base, parts in bases.items():
        if parts != {"lora_a", "lora_b"}:
            missing = ({"lora_a", "lora_b"} - parts).pop()
            raise GGUFValidationError(
                path, f"tensor '{base}.{missing}' is missing: LoRA tensors come in a/b pairs"
            )
