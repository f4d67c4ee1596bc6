"""The adapters loaded into the running engine: the one registry of them.

The server resolves `<base>:<adapter>` model ids and lists loaded adapters from this registry, and
only this registry loads or unloads one in the engine (which keeps the llama.cpp handles), so there
is no second list to keep in step.

An adapter reaches the engine only after its file passed the validating GGUF reader and the base
fingerprint recorded *in the file* equals the served model's. What the store's manifest says is a
cache of the file, never the authority: a manifest that disagrees with its file is refused, since
one of the two was edited or replaced.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hermesd.models.gguf_lora import AdapterBaseMismatch, check_adapter_base, read_adapter_info
from hermesd.models.gguf_validate import base_fingerprint
from hermesd.runtime.engine.protocol import Engine
from hermesd.runtime.errors import AdapterError, AdapterNotFound

log = logging.getLogger(__name__)


class AdapterManifestMismatch(AdapterError):
    """The store's manifest and the adapter file name different base models."""


@dataclass(frozen=True)
class LoadedAdapter:
    name: str
    path: Path
    base_fingerprint: str  # as recorded in the adapter file
    loaded_at: float  # time.time()


class LoadedAdapters:
    """Name -> loaded adapter. Reads are safe from any thread; `load` and `unload` block (run them in
    a worker thread) and the caller serialises them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._loaded: dict[str, LoadedAdapter] = {}
        self._base: str | None = None
        self._base_lock = threading.Lock()

    def __contains__(self, name: object) -> bool:
        return name in self._loaded

    def get(self, name: str) -> LoadedAdapter | None:
        return self._loaded.get(name)

    def all(self) -> list[LoadedAdapter]:
        return list(self._loaded.values())

    def base_fingerprint(self) -> str:
        """The served model's base fingerprint (read from its file once)."""
        with self._base_lock:
            if self._base is None:
                self._base = base_fingerprint(self.engine.info.path)
            return self._base

    def load(self, name: str, path: Path, manifest_fingerprint: str | None) -> LoadedAdapter:
        """Check the adapter file against its manifest and the served model, then load it.

        Raises AdapterFileError (not a valid adapter GGUF), AdapterManifestMismatch,
        AdapterBaseMismatch (trained on another base, or no base recorded), AdapterError (llama.cpp
        refused it, or the name is taken).
        """
        if name in self._loaded:
            raise AdapterError(f"adapter '{name}' is already loaded")
        info = read_adapter_info(path)
        if info.base_fingerprint != manifest_fingerprint:
            raise AdapterManifestMismatch(
                f"adapter '{name}': its manifest says it was trained on base "
                f"{manifest_fingerprint or '(none)'}, but the adapter file {path} records base "
                f"{info.base_fingerprint or '(none)'}; the file and the manifest disagree (one was edited "
                "or replaced), so it is refused. Register the adapter file again."
            )
        served = self.engine.info
        if served.upstream is None:
            check_adapter_base(info, self.base_fingerprint(), required=True)
        elif info.architecture and served.architecture and info.architecture != served.architecture:
            # no model file here to fingerprint: the upstream checks every tensor shape as it loads
            raise AdapterBaseMismatch(
                f"{path}: adapter is for architecture {info.architecture!r}, but the upstream's model "
                f"{served.name} is {served.architecture!r}"
            )
        self.engine.load_adapter(name, str(path))
        loaded = LoadedAdapter(name, path, info.base_fingerprint or "", time.time())
        self._loaded[name] = loaded
        log.info("adapter %s loaded from %s", name, path)
        return loaded

    def unload(self, name: str) -> None:
        """Unload a loaded adapter. New requests stop resolving the name first, then the engine frees
        it; if the engine refuses (requests still use it), the adapter stays loaded."""
        loaded = self._loaded.pop(name, None)
        if loaded is None:
            raise AdapterNotFound(f"adapter '{name}' is not loaded")
        try:
            self.engine.unload_adapter(name)
        except AdapterNotFound:
            pass
        except AdapterError:
            self._loaded[name] = loaded
            raise
        log.info("adapter %s unloaded", name)
