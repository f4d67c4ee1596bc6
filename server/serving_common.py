"""What both generation endpoints share: request checks, sampling defaults, usage JSON, and
reading an engine stream to its end (recording the outcome in the request's log line)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from hermesd.runtime.engine.protocol import FinishEvent, RequestStream, SamplingParams, TextEvent, Usage
from hermesd.server import request_log
from hermesd.server.errors import APIError, invalid
from hermesd.server.protocol.common import UNSUPPORTED_IF_SET, SamplingFields

# Hermes 4 model card: "Sampling defaults that work well: temperature=0.6, top_p=0.95, top_k=20"
DEFAULT_SAMPLING = SamplingParams(temperature=0.6, top_p=0.95, top_k=20)


def check_unsupported(req: SamplingFields) -> None:
    for name, value in req.extra_fields().items():
        if name in UNSUPPORTED_IF_SET and value not in (None, False, 0, {}, []):
            raise invalid(f"{name}: {UNSUPPORTED_IF_SET[name]}", param=name, code="unsupported_parameter")
    if req.n != 1:
        raise invalid("n: only n=1 is supported", param="n", code="unsupported_parameter")


def output_budget(requested: int | None, limit: int, default: int | None = None) -> int:
    """The most tokens one request may generate: what it asked for, at most `limit`
    (--max-tokens-limit). Asking for more is not an error, as in llama-server and Ollama: agents send
    the whole context as max_tokens, and generation ends where the context does ("length")."""
    return min(requested or default or limit, limit)


def sampling_from(req: SamplingFields) -> SamplingParams:
    d = DEFAULT_SAMPLING
    return SamplingParams(
        temperature=d.temperature if req.temperature is None else req.temperature,
        top_p=d.top_p if req.top_p is None else req.top_p,
        top_k=d.top_k if req.top_k is None else req.top_k,
        min_p=d.min_p if req.min_p is None else req.min_p,
        repeat_penalty=d.repeat_penalty if req.repeat_penalty is None else req.repeat_penalty,
        presence_penalty=d.presence_penalty if req.presence_penalty is None else req.presence_penalty,
        frequency_penalty=d.frequency_penalty if req.frequency_penalty is None else req.frequency_penalty,
        seed=None if req.seed is None else req.seed & 0xFFFFFFFF,
    )


def note_finish(finish: FinishEvent, started: float, first: float | None) -> None:
    """Record the outcome in this request's log line."""
    u = finish.usage
    request_log.note(
        finish=finish.reason,
        prompt_tokens=u.prompt_tokens,
        cached_tokens=u.cached_tokens,
        completion_tokens=u.completion_tokens,
        reasoning_tokens=u.reasoning_tokens,
        ttft_ms=round((first - started) * 1000, 1) if first else None,
        **({"error": finish.error} if finish.error else {}),
    )


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "accepted_prediction_tokens": usage.accepted_prediction_tokens,
            "rejected_prediction_tokens": usage.rejected_prediction_tokens,
        },
    }


@dataclass
class Outcome:
    """Filled in by `texts` when the stream ends."""

    finish: FinishEvent | None = None

    @property
    def usage(self) -> Usage:
        assert self.finish is not None
        return self.finish.usage

    @property
    def reason(self) -> str:
        assert self.finish is not None
        return self.finish.reason


async def texts(stream: RequestStream, outcome: Outcome) -> AsyncIterator[str]:
    """The text of an engine stream. At the end: the finish goes into `outcome` and the request's
    log line, and an engine error becomes an APIError (a 500, or one error event mid-stream)."""
    started, first = time.monotonic(), None
    try:
        async for event in stream:
            if isinstance(event, TextEvent):
                first = first or time.monotonic()
                yield event.text
            else:
                outcome.finish = event
    finally:
        await stream.aclose()
    finish = outcome.finish
    assert finish is not None
    note_finish(finish, started, first)
    if finish.reason == "error":
        raise APIError(500, finish.error or "generation failed", type="server_error")
