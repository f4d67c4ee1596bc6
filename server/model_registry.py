"""Which model ids this server answers to: the base model's ids and `<base>:<adapter>` ids."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from hermesd.server.errors import APIError

ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ResolvedModel:
    id: str
    base_id: str
    adapter: str | None


class ModelRegistry:
    def __init__(self, base_ids: list[str]) -> None:
        if not base_ids:
            raise ValueError("a served model needs at least one id")
        self.base_ids = list(dict.fromkeys(base_ids))
        self.created = int(time.time())
        self.adapters: dict[str, float] = {}  # loaded adapter name -> time loaded

    @property
    def primary(self) -> str:
        return self.base_ids[0]

    def add_adapter(self, name: str) -> None:
        self.adapters[name] = time.time()

    def remove_adapter(self, name: str) -> None:
        self.adapters.pop(name, None)

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
        for name, loaded in self.adapters.items():
            out.append(
                {
                    "id": f"{self.primary}:{name}",
                    "object": "model",
                    "created": int(loaded),
                    "owned_by": "hermesd",
                    "parent": self.primary,
                    "root": self.primary,
                }
            )
        return out
