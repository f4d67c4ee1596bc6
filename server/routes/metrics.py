"""Prometheus metrics, read from the engine's counters at scrape time (no global registry)."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from hermesd.runtime.engine.protocol import Engine
from hermesd.server.routes.deps import serving
from hermesd.server.state import Serving

router = APIRouter()


class EngineCollector:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        s = self.engine.stats()
        yield GaugeMetricFamily("hermesd_requests_running", "requests holding a slot", value=s.running)
        yield GaugeMetricFamily("hermesd_requests_waiting", "requests queued for a slot", value=s.waiting)
        yield GaugeMetricFamily("hermesd_slots", "sequence slots", value=s.slots)
        yield CounterMetricFamily("hermesd_decode_steps", "llama_decode calls", value=s.decode_steps)
        yield CounterMetricFamily("hermesd_prompt_tokens", "prompt tokens received", value=s.prompt_tokens)
        yield CounterMetricFamily(
            "hermesd_prompt_tokens_cached", "prompt tokens reused from cache", value=s.cached_prompt_tokens
        )
        yield CounterMetricFamily("hermesd_generated_tokens", "tokens generated", value=s.generated_tokens)
        finished = CounterMetricFamily(
            "hermesd_requests_finished", "requests by finish reason", labels=["reason"]
        )
        for reason, n in sorted(s.finished.items()):
            finished.add_metric([reason], n)
        yield finished


@router.get("/metrics")
async def metrics(s: Serving = Depends(serving)) -> Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(s.engine))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
