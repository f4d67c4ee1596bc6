"""Hot-loading LoRA adapters from the store into the running engine, by registered name.

Only names registered in the store can be loaded (never arbitrary paths from a request). Every
adapter file is validated in Python first, and its recorded base fingerprint must match the served
model's, so an adapter trained for another base is refused before llama.cpp sees it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from hermesd.models.gguf_validate import GGUFValidationError, validate_gguf
from hermesd.models.gguf_validate import base_fingerprint
from hermesd.models.store import AdapterStore, StoreError, check_name
from hermesd.runtime.engine.protocol import Engine
from hermesd.runtime.errors import AdapterError, AdapterNotFound
from hermesd.server.errors import APIError, invalid
from hermesd.server.model_registry import ModelRegistry

log = logging.getLogger(__name__)


class AdapterServing:
    def __init__(self, engine: Engine, registry: ModelRegistry, store: AdapterStore) -> None:
        self.engine = engine
        self.registry = registry
        self.store = store
        self._fingerprint: str | None = None
        self._lock = asyncio.Lock()

    async def base_fingerprint(self) -> str:
        if self._fingerprint is None:
            fingerprint = await asyncio.to_thread(base_fingerprint, Path(self.engine.info.path))
            self._fingerprint = fingerprint
            return fingerprint
        return self._fingerprint

    def _entry(self, name: str, path: str, fingerprint: str | None) -> dict[str, Any]:
        return {
            "name": name,
            "id": f"{self.registry.primary}:{name}",
            "object": "adapter",
            "loaded": name in self.registry.adapters,
            "path": path,
            "base_fingerprint": fingerprint,
        }

    async def list(self) -> dict[str, Any]:
        records = await asyncio.to_thread(self.store.list)
        data = [self._entry(r.name, str(r.path), r.base_fingerprint) for r in records]
        listed = {r.name for r in records}
        loaded = self.engine.adapters()
        data += [self._entry(n, p, None) for n, p in loaded.items() if n not in listed]
        return {"object": "list", "data": data}

    async def load(self, name: str) -> dict[str, Any]:
        try:
            check_name(name)
        except StoreError as exc:
            raise invalid(str(exc), param="name") from None
        async with self._lock:
            if name in self.registry.adapters:
                raise APIError(
                    409, f"adapter '{name}' is already loaded", param="name", code="already_loaded"
                )
            try:
                record = await asyncio.to_thread(self.store.get, name)
            except StoreError as exc:
                raise APIError(
                    404, str(exc), type="not_found_error", param="name", code="adapter_not_found"
                ) from None
            want = await self.base_fingerprint()
            if record.base_fingerprint != want:
                raise invalid(
                    f"adapter '{name}' was trained for another base model (its base fingerprint is "
                    f"{record.base_fingerprint or 'missing'}, the served model's is {want})",
                    param="name",
                    code="wrong_base_model",
                )
            try:
                await asyncio.to_thread(validate_gguf, record.path, kind="adapter")
                await asyncio.to_thread(self.engine.load_adapter, name, str(record.path))
            except GGUFValidationError as exc:
                raise invalid(str(exc), param="name", code="invalid_adapter_file") from None
            except AdapterError as exc:
                raise invalid(str(exc), param="name", code="adapter_load_failed") from None
            self.registry.add_adapter(name)
            log.info("adapter %s loaded from %s", name, record.path)
        return self._entry(name, str(record.path), record.base_fingerprint)

    async def unload(self, name: str) -> dict[str, Any]:
        async with self._lock:
            if name not in self.registry.adapters:
                raise APIError(
                    404,
                    f"adapter '{name}' is not loaded",
                    type="not_found_error",
                    param="name",
                    code="adapter_not_found",
                )
            # new requests stop resolving the name first, then the engine frees it
            self.registry.remove_adapter(name)
            try:
                await asyncio.to_thread(self.engine.unload_adapter, name)
            except AdapterNotFound:
                pass
            except AdapterError as exc:
                self.registry.add_adapter(name)
                raise APIError(409, str(exc), param="name", code="adapter_busy") from None
            log.info("adapter %s unloaded", name)
        return {"name": name, "id": f"{self.registry.primary}:{name}", "object": "adapter", "loaded": False}
