"""Hot-loading LoRA adapters from the store into the running engine, by registered name.

Only names registered in the store can be loaded (never arbitrary paths from a request). The checks
themselves (a valid adapter file; the base fingerprint recorded in the file equal to the served
model's and to what the manifest says) live in the registry of loaded adapters
(runtime/adapters.py); this layer maps their errors to HTTP.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hermesd.models.gguf_lora import AdapterBaseMismatch, AdapterFileError
from hermesd.models.store import AdapterStore, StoreError, check_name
from hermesd.runtime.adapters import AdapterManifestMismatch
from hermesd.runtime.errors import AdapterError, AdapterNotFound
from hermesd.server.errors import APIError, invalid
from hermesd.server.model_registry import ModelRegistry


class AdapterServing:
    def __init__(self, registry: ModelRegistry, store: AdapterStore) -> None:
        self.registry = registry
        self.loaded = registry.adapters
        self.store = store
        self._lock = asyncio.Lock()

    def _entry(self, name: str, path: str, fingerprint: str | None) -> dict[str, Any]:
        loaded = self.loaded.get(name)
        return {
            "name": name,
            "id": self.registry.adapter_id(name),
            "object": "adapter",
            "loaded": loaded is not None,
            "path": str(loaded.path) if loaded else path,
            # a loaded adapter's is the one its file records; the manifest's is a cache of it
            "base_fingerprint": loaded.base_fingerprint if loaded else fingerprint,
        }

    async def list(self) -> dict[str, Any]:
        records = await asyncio.to_thread(self.store.list)
        data = [self._entry(r.name, str(r.path), r.base_fingerprint) for r in records]
        listed = {r.name for r in records}
        data += [self._entry(a.name, str(a.path), None) for a in self.loaded.all() if a.name not in listed]
        return {"object": "list", "data": data}

    async def load(self, name: str) -> dict[str, Any]:
        try:
            check_name(name)
        except StoreError as exc:
            raise invalid(str(exc), param="name") from None
        async with self._lock:
            if name in self.loaded:
                raise APIError(
                    409, f"adapter '{name}' is already loaded", param="name", code="already_loaded"
                )
            try:
                record = await asyncio.to_thread(self.store.get, name)
            except StoreError as exc:
                raise APIError(
                    404, str(exc), type="not_found_error", param="name", code="adapter_not_found"
                ) from None
            try:
                await asyncio.to_thread(self.loaded.load, name, record.path, record.base_fingerprint)
            except AdapterBaseMismatch as exc:  # before AdapterFileError, its base class
                raise invalid(str(exc), param="name", code="wrong_base_model") from None
            except AdapterFileError as exc:
                raise invalid(str(exc), param="name", code="invalid_adapter_file") from None
            except AdapterManifestMismatch as exc:
                raise invalid(str(exc), param="name", code="adapter_manifest_mismatch") from None
            except AdapterError as exc:
                raise invalid(str(exc), param="name", code="adapter_load_failed") from None
        return self._entry(name, str(record.path), record.base_fingerprint)

    async def unload(self, name: str) -> dict[str, Any]:
        async with self._lock:
            try:
                await asyncio.to_thread(self.loaded.unload, name)
            except AdapterNotFound as exc:
                raise APIError(
                    404, str(exc), type="not_found_error", param="name", code="adapter_not_found"
                ) from None
            except AdapterError as exc:
                raise APIError(409, str(exc), param="name", code="adapter_busy") from None
        return {"name": name, "id": self.registry.adapter_id(name), "object": "adapter", "loaded": False}
