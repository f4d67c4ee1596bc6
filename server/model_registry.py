"""Which model ids this server answers to: the base model's ids and `<base>:<adapter>` ids, for the
adapters in the one registry of loaded adapters (runtime/adapters.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from hermesd.runtime.adapters import LoadedAdapters
from hermesd.server.errors import APIError


@dataclass(frozen=True)
class ResolvedModel:
    id: str
    base_id: str
    adapter: str | None


class ModelRegistry:
    def __init__(self, base_ids: list[str], adapters: LoadedAdapters) -> None:
        if not base_ids:
            raise ValueError("a served model needs at least one id")
        self.base_ids = list(dict.fromkeys(base_ids))
        self.created = int(time.time())
        self.adapters = adapters

    @property
    def primary(self) -> str:
        return self.base_ids[0]

    def adapter_id(self, name: str) -> str:
        return f"{self.primary}:{name}"

    def resolve(self, model: str) -> ResolvedModel:
        if model in self.base_ids:
            return ResolvedModel(model, model, None)
        base, sep, adapter = model.rpartition(":")
        if sep and base in self.base_ids and adapter in self.adapters:
            return ResolvedModel(model, base, adapter)
        raise APIError(
            404,
            f"The model '{model}' does not exist or is not loaded here",
            type="not_found_error",
            param="model",
            code="model_not_found",
        )

    def listing(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = [
            {"id": i, "object": "model", "created": self.created, "owned_by": "hermesd"}
            for i in self.base_ids
        ]
        for adapter in self.adapters.all():
            out.append(
                {
                    "id": self.adapter_id(adapter.name),
                    "object": "model",
                    "created": int(adapter.loaded_at),
                    "owned_by": "hermesd",
                    "parent": self.primary,
                    "root": self.primary,
                }
            )
        return out
