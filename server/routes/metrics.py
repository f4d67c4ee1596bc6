"""Prometheus metrics, read from the engine's counters at scrape time (no global registry)."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from hermesd.runtime.engine.protocol import Engine, ModelInfo
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
        drafted = CounterMetricFamily(
            "hermesd_spec_drafted_tokens", "tokens drafted for speculative decoding", labels=["source"]
        )
        accepted = CounterMetricFamily(
            "hermesd_spec_accepted_tokens", "drafted tokens the model kept", labels=["source"]
        )
        for source in sorted(s.spec_drafted.keys() | s.spec_accepted.keys()):
            drafted.add_metric([source], s.spec_drafted.get(source, 0))
            accepted.add_metric([source], s.spec_accepted.get(source, 0))
        yield drafted
        yield accepted
        yield from device_metrics(self.engine.info)


def device_metrics(info: ModelInfo) -> Iterator[Metric]:
    """Where the model runs, from llama.cpp's account of the load: backends, layers and memory per device."""
    backends = GaugeMetricFamily(
        "hermesd_engine_backend", "llama.cpp backends of this build", labels=["backend"]
    )
    for name in info.backends:
        backends.add_metric([name], 1)
    yield backends
    layers = GaugeMetricFamily("hermesd_device_layers", "model layers per device", labels=["device", "kind"])
    memory = GaugeMetricFamily(
        "hermesd_device_memory_bytes", "memory per device and buffer", labels=["device", "kind", "buffer"]
    )
    for d in info.devices:
        layers.add_metric([d.name, d.kind], d.layers)
        for buffer, n in (("model", d.model_bytes), ("kv", d.kv_bytes), ("compute", d.compute_bytes)):
            memory.add_metric([d.name, d.kind, buffer], n)
    yield layers
    yield memory


@router.get("/metrics")
async def metrics(s: Serving = Depends(serving)) -> Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(s.engine))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
