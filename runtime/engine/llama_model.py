"""A loaded llama.cpp model: weights, vocabulary, metadata, tokenization and LoRA adapters.

Uses llama-cpp-python's low-level bindings because the high-level `Llama` class decodes one
sequence at a time and does not expose `use_extra_bufts` (see LlamaModelConfig.cpu_extra_buffers).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp.llama_cpp as ll

from hermesd.models.gguf_validate import GGUFValidationError, validate_gguf
from hermesd.runtime.engine.capabilities import use_pci_bus_order
from hermesd.runtime.engine.context_settings import ContextSettings
from hermesd.runtime.errors import AdapterError, ModelLoadError

log = logging.getLogger(__name__)

_backend_lock = threading.Lock()
_backend_ready = False
_GGML_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_log_callback = None  # kept alive: llama.cpp holds a raw pointer to it
# While a load runs, llama.cpp's log lines are also collected here (runtime/engine/load_report.py
# reads the placement from them); one load at a time per process.
_captured: list[str] | None = None


def init_backend() -> None:
    """Initialise llama.cpp once per process and send its log lines to `logging`."""
    global _backend_ready, _log_callback
    with _backend_lock:
        if _backend_ready:
            return
        use_pci_bus_order()
        ll.llama_backend_init()
        llama_log = logging.getLogger("hermesd.llama_cpp")

        @ll.llama_log_callback
        def _forward(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
            message = text.decode("utf-8", "replace").rstrip()
            if not message:
                return
            if _captured is not None:
                _captured.append(message)
            # ggml levels: 1 debug, 2 info, 3 warn, 4 error, 5 continuation of the previous line
            llama_log.log(_GGML_LEVELS.get(level, logging.DEBUG), "%s", message)

        _log_callback = _forward
        ll.llama_log_set(_forward, ctypes.c_void_p(0))
        _backend_ready = True


@contextmanager
def capture_log() -> Iterator[list[str]]:
    """Collect llama.cpp's log lines (all levels) while the block runs."""
    global _captured
    init_backend()
    lines: list[str] = []
    _captured = lines
    try:
        yield lines
    finally:
        _captured = None


@dataclass(frozen=True)
class LlamaModelConfig:
    path: Path
    gpu_layers: int = -1
    tensor_split: tuple[float, ...] = ()
    # llama.cpp's AMX/repack buffer types: AMX tile instructions trap (SIGILL) inside many
    # virtual machines on the first quantized matmul, so they are off unless asked for.
    cpu_extra_buffers: bool = False
    vocab_only: bool = False


@dataclass
class LoadedAdapter:
    name: str
    path: str
    handle: ctypes.c_void_p
    metadata: dict[str, str] = field(default_factory=dict)


class LlamaModel:
    """Owns a `llama_model *`. Tokenization is read-only on the vocabulary and thread-safe."""

    def __init__(self, config: LlamaModelConfig) -> None:
        init_backend()
        self.config = config
        path = config.path
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such model file")
        try:  # every load checks the file first: no path hands llama.cpp an unchecked GGUF
            self.summary = validate_gguf(path, kind="model")
        except GGUFValidationError as exc:
            raise ModelLoadError(f"refusing to load a damaged or hostile model file: {exc}") from None
        params = ll.llama_model_default_params()
        params.n_gpu_layers = config.gpu_layers if config.gpu_layers >= 0 else 0x7FFFFFFF
        params.use_extra_bufts = config.cpu_extra_buffers
        params.vocab_only = config.vocab_only
        if config.tensor_split:
            self._split = (ctypes.c_float * 16)(*config.tensor_split[:16])
            params.tensor_split = self._split
        model = ll.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise ModelLoadError(
                f"{path}: llama.cpp could not load this model (unsupported architecture, damaged file, "
                "or not enough memory); run with --log-level debug for llama.cpp's reason"
            )
        self.handle = model
        self.vocab = ll.llama_model_get_vocab(model)
        self.n_vocab = ll.llama_vocab_n_tokens(self.vocab)
        self.bos_id = ll.llama_vocab_bos(self.vocab)
        self.eos_id = ll.llama_vocab_eos(self.vocab)
        self.add_bos = bool(ll.llama_vocab_get_add_bos(self.vocab))
        self.metadata = self._read_metadata()
        self.n_ctx_train = ll.llama_model_n_ctx_train(model)
        self.n_params = int(ll.llama_model_n_params(model))
        self.size_bytes = int(ll.llama_model_size(model))
        self._pieces: dict[int, bytes] = {}
        self._adapters: dict[str, LoadedAdapter] = {}
        self._adapter_lock = threading.Lock()

    def new_context(self, settings: ContextSettings, what: str = "a context") -> tuple[Any, int]:
        """A llama.cpp context on this model as `settings` describe it, and its n_batch."""
        params = settings.fill(ll.llama_context_default_params())
        ctx = ll.llama_init_from_model(self.handle, params)
        if not ctx:
            raise ModelLoadError(
                f"{self.config.path}: llama.cpp could not create {what} of {settings.parallel} x "
                f"{settings.ctx} tokens (not enough memory?); lower --ctx or --parallel"
            )
        return ctx, int(params.n_batch)

    # -- metadata
    def _read_metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        buf = ctypes.create_string_buffer(4096)
        for i in range(ll.llama_model_meta_count(self.handle)):
            n = ll.llama_model_meta_key_by_index(self.handle, i, buf, len(buf))
            if n < 0:
                continue
            key = buf.value.decode("utf-8", "replace")
            out[key] = self._meta_value(i)
        return out

    def _meta_value(self, index: int) -> str:
        size = 4096
        while True:
            buf = ctypes.create_string_buffer(size)
            n = ll.llama_model_meta_val_str_by_index(self.handle, index, buf, size)
            if n < 0:
                return ""
            if n < size:
                return buf.value.decode("utf-8", "replace")
            size = n + 1

    def chat_template(self) -> str | None:
        raw = ll.llama_model_chat_template(self.handle, None)
        return raw.decode("utf-8", "replace") if raw else None

    # -- tokens
    def tokenize(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        """Tokenize with special tokens parsed. Adds BOS when the vocabulary wants one and the text
        does not already start with it (a rendered Llama-3 prompt carries its own)."""
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (ll.llama_token * cap)()
        n = ll.llama_tokenize(self.vocab, data, len(data), buf, cap, False, True)
        if n < 0:
            cap = -n
            buf = (ll.llama_token * cap)()
            n = ll.llama_tokenize(self.vocab, data, len(data), buf, cap, False, True)
        tokens = list(buf[:n])
        want_bos = self.add_bos if add_bos is None else add_bos
        if want_bos and self.bos_id >= 0 and (not tokens or tokens[0] != self.bos_id):
            tokens.insert(0, self.bos_id)
        return tokens

    def token_bytes(self, token: int) -> bytes:
        """The bytes of one token. Special tokens such as `<think>` are rendered as text, because
        Hermes models emit reasoning and tool-call tags as special tokens. Cached: the vocabulary
        never changes, and this runs once per generated token."""
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        piece = self._token_bytes(token)
        self._pieces[token] = piece
        return piece

    def _token_bytes(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = ll.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = ll.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
        return buf.raw[:n]

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.token_bytes(t) for t in tokens).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        return bool(ll.llama_vocab_is_eog(self.vocab, token))

    def token_text(self, token: int) -> str:
        return self.token_bytes(token).decode("utf-8", "replace") if token >= 0 else ""

    # -- LoRA adapters (applied per context by the scheduler)
    def load_adapter(self, name: str, path: Path) -> LoadedAdapter:
        with self._adapter_lock:
            if name in self._adapters:
                raise AdapterError(f"adapter '{name}' is already loaded")
            try:
                validate_gguf(path, kind="adapter")
            except GGUFValidationError as exc:
                raise AdapterError(f"refusing a damaged or hostile adapter file: {exc}") from None
            handle = ll.llama_adapter_lora_init(self.handle, str(path).encode())
            if not handle:
                raise AdapterError(
                    f"{path}: llama.cpp refused this adapter (wrong base model shapes or not a LoRA GGUF)"
                )
            adapter = LoadedAdapter(name=name, path=str(path), handle=handle)
            adapter.metadata = _adapter_metadata(handle)
            self._adapters[name] = adapter
            return adapter

    def get_adapter(self, name: str) -> LoadedAdapter | None:
        return self._adapters.get(name)

    def free_adapter(self, name: str) -> None:
        """Free an adapter's memory. The caller guarantees no context still uses it."""
        with self._adapter_lock:
            adapter = self._adapters.pop(name, None)
        if adapter is not None:
            ll.llama_adapter_lora_free(adapter.handle)

    def close(self) -> None:
        for name in list(self._adapters):
            self.free_adapter(name)
        if self.handle:
            ll.llama_model_free(self.handle)
            self.handle = None


def _adapter_metadata(handle: ctypes.c_void_p) -> dict[str, str]:
    out: dict[str, str] = {}
    buf = ctypes.create_string_buffer(1024)
    for i in range(ll.llama_adapter_meta_count(handle)):
        if ll.llama_adapter_meta_key_by_index(handle, i, buf, len(buf)) < 0:
            continue
        key = buf.value.decode("utf-8", "replace")
        if ll.llama_adapter_meta_val_str_by_index(handle, i, buf, len(buf)) >= 0:
            out[key] = buf.value.decode("utf-8", "replace")
    return out
