"""Which model ids this server answers to: the base model's ids and `<base>:<adapter>` ids, for the
adapters in the one registry of loaded adapters (runtime/adapters.py), and the names that reach them
through `--model-alias PATTERN=ID` globs. Every API resolves the `model` of a request here.

The listing also says what an agent needs to know about the model: the context per sequence the
server really allocated (`context_length`, `max_model_len`) and the model file's facts (`meta`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from hermesd.runtime.adapters import LoadedAdapters
from hermesd.runtime.engine.protocol import ModelInfo
from hermesd.server.errors import APIError


@dataclass(frozen=True)
class ResolvedModel:
    id: str
    base_id: str
    adapter: str | None


class ModelRegistry:
    def __init__(
        self,
        base_ids: list[str],
        adapters: LoadedAdapters,
        aliases: Sequence[tuple[str, str]] = (),
        info: ModelInfo | None = None,
    ) -> None:
        if not base_ids:
            raise ValueError("a served model needs at least one id")
        self.base_ids = list(dict.fromkeys(base_ids))
        self.created = int(time.time())
        self.adapters = adapters
        self.info = info
        for pattern, target in aliases:
            base = target.rpartition(":")[0] if ":" in target and target not in self.base_ids else target
            if base not in self.base_ids:
                raise ValueError(
                    f"--model-alias {pattern}={target}: {target!r} is not served here "
                    f"(served: {', '.join(self.base_ids)})"
                )
        self.aliases = list(aliases)

    @property
    def primary(self) -> str:
        return self.base_ids[0]

    def adapter_id(self, name: str) -> str:
        return f"{self.primary}:{name}"

    def resolve(self, model: str) -> ResolvedModel:
        found = self._concrete(model)
        if found is None:
            # the first matching alias wins, in the order the flags were given
            target = next((t for p, t in self.aliases if fnmatchcase(model, p)), None)
            found = self._concrete(target) if target is not None else None
        if found is not None:
            return found
        raise APIError(
            404,
            f"The model '{model}' does not exist or is not loaded here",
            type="not_found_error",
            param="model",
            code="model_not_found",
        )

    def _concrete(self, model: str) -> ResolvedModel | None:
        if model in self.base_ids:
            return ResolvedModel(model, model, None)
        base, sep, adapter = model.rpartition(":")
        if sep and base in self.base_ids and adapter in self.adapters:
            return ResolvedModel(model, base, adapter)
        return None

    def context_fields(self) -> dict[str, object]:
        """What agents read to learn the usable context (vLLM's `max_model_len`, LM Studio's and
        OpenRouter's `context_length`, llama-server's `meta`)."""
        info = self.info
        if info is None:
            return {}
        return {
            "context_length": info.context_length,
            "max_model_len": info.context_length,
            "meta": {
                "n_ctx": info.context_length,
                "n_ctx_train": info.train_context_length,
                "n_params": info.n_params,
                "size": info.size_bytes,
            },
        }

    def listing(self) -> list[dict[str, object]]:
        """The concrete ids (never the aliases), each with the context facts."""
        facts = self.context_fields()
        out: list[dict[str, object]] = [
            {"id": i, "object": "model", "created": self.created, "owned_by": "hermesd", **facts}
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
                    **facts,
                }
            )
        return out
