"""POST /v1/completions: raw prompt in, text out (no chat template, no reasoning split)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from hermesd.runtime.engine.protocol import (
    Engine,
    GenerationRequest,
    RequestStream,
)
from hermesd.server import request_log
from hermesd.server.errors import invalid
from hermesd.server.model_registry import ModelRegistry
from hermesd.server.protocol.completions import CompletionRequest
from hermesd.server.serving_common import (
    Outcome,
    check_unsupported,
    output_budget,
    sampling_from,
    texts,
    usage_json,
)
from hermesd.server.settings import Settings


class CompletionServing:
    def __init__(self, engine: Engine, registry: ModelRegistry, settings: Settings) -> None:
        self.engine = engine
        self.registry = registry
        self.settings = settings

    async def create_full(self, req: CompletionRequest) -> dict[str, Any]:
        return await self._collect(*await self._start(req))

    async def create_stream(self, req: CompletionRequest) -> AsyncIterator[dict[str, Any]]:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return self._chunks(*await self._start(req), include_usage)

    async def _start(self, req: CompletionRequest) -> tuple[str, str, RequestStream]:
        check_unsupported(req)
        model = self.registry.resolve(req.model)
        s = self.settings
        stops = req.stop_list()
        if len(stops) > s.max_stop:
            raise invalid(f"stop: at most {s.max_stop} stop sequences", param="stop")
        try:
            trigger = req.grammar_trigger()
        except ValueError as exc:
            raise invalid(str(exc), param="grammar_triggers") from None
        rid = f"cmpl-{uuid.uuid4().hex[:24]}"
        gen = GenerationRequest(
            prompt=req.prompt_text(),
            # OpenAI's default for /v1/completions is 16 tokens
            max_tokens=output_budget(req.max_tokens, s.max_tokens_limit, default=16),
            sampling=sampling_from(req),
            stop=stops,
            ignore_eos=req.ignore_eos,
            grammar=req.grammar,
            grammar_trigger=trigger if req.grammar else None,
            adapters=((model.adapter, 1.0),) if model.adapter else (),
            request_id=rid,
        )
        request_log.note(model=model.id, stream=req.stream)
        return model.id, rid, await self.engine.submit(gen)

    async def _collect(self, model_id: str, rid: str, stream: RequestStream) -> dict[str, Any]:
        outcome = Outcome()
        parts = [text async for text in texts(stream, outcome)]
        return {
            "id": rid,
            "object": "text_completion",
            "created": int(time.time()),
            "model": model_id,
            "choices": [
                {"index": 0, "text": "".join(parts), "logprobs": None, "finish_reason": outcome.reason}
            ],
            "usage": usage_json(outcome.usage),
        }

    async def _chunks(
        self, model_id: str, rid: str, stream: RequestStream, include_usage: bool
    ) -> AsyncIterator[dict[str, Any]]:
        created = int(time.time())

        def chunk(text: str, finish_reason: str | None = None) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": model_id,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
            }

        outcome = Outcome()
        try:
            async for text in texts(stream, outcome):
                yield chunk(text)
        finally:
            await stream.aclose()  # at once when the client went away, not when `texts` is collected
        yield chunk("", outcome.reason)
        if include_usage:
            yield {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": model_id,
                "choices": [],
                "usage": usage_json(outcome.usage),
            }
