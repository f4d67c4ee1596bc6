"""A fingerprint of a base model that survives re-quantization but not a different model.

An adapter records the fingerprint of the model it was trained on; the server refuses to load it
onto a base whose fingerprint differs. Computed from the architecture, the tensor names and shapes
(not their types, so Q4_K_M and Q8_0 of one model agree) and the vocabulary.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import gguf


def base_fingerprint(path: Path) -> str:
    reader = gguf.GGUFReader(str(path), "r")
    h = hashlib.sha256()
    arch = _field_str(reader, "general.architecture")
    h.update(arch.encode())
    for t in sorted(reader.tensors, key=lambda t: t.name):
        h.update(t.name.encode())
        h.update(",".join(str(int(d)) for d in t.shape).encode())
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is not None:
        for idx in tokens.data:
            h.update(bytes(tokens.parts[idx]))
            h.update(b"\0")
    return f"{arch}-{h.hexdigest()[:32]}"


def _field_str(reader: gguf.GGUFReader, key: str) -> str:
    field = reader.fields.get(key)
    if field is None or not field.data:
        return ""
    return bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
