"""GET /v1/status: what `hermesd ps` shows — the served model, its loaded adapters, slots busy and
waiting, the context per slot, memory per device and uptime — in one JSON object.

It reads the same sources as /metrics (`engine.stats()`, the load report in `engine.info.devices`)
and /v1/props (`engine.info`, the registry), and answers while the model loads too (status
`loading`, with uptime), so `ps` can tell a loading daemon from an absent one. It needs a user key
like every route but /health (server/middleware.py): it shows no more than /metrics does."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends

from hermesd.runtime.engine.protocol import DeviceUse
from hermesd.server.routes.deps import app_state
from hermesd.server.state import AppState, Serving

router = APIRouter()


def _version() -> str:
    try:
        return version("hermesd")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"


def device_row(d: DeviceUse) -> dict[str, Any]:
    total = d.model_bytes + d.kv_bytes + d.compute_bytes
    return {
        "name": d.name,
        "kind": d.kind,
        "layers": d.layers,
        "model_bytes": d.model_bytes,
        "kv_bytes": d.kv_bytes,
        "compute_bytes": d.compute_bytes,
        "total_bytes": total,
    }


def serving_status(s: Serving) -> dict[str, Any]:
    """The running model's part of the status."""
    info = s.engine.info
    stats = s.engine.stats()
    return {
        "model": {
            "id": s.registry.primary,
            "ids": list(s.registry.base_ids),
            # the file's name only, as /v1/props: the server's directories are nobody's business
            "file": Path(info.path).name,
            "name": info.name,
            "architecture": info.architecture,
            "n_params": info.n_params,
            "size_bytes": info.size_bytes,
        },
        "adapters": [
            {"name": a.name, "id": s.registry.adapter_id(a.name), "loaded_at": a.loaded_at}
            for a in s.registry.adapters.all()
        ],
        "slots": {"total": stats.slots, "busy": stats.running, "waiting": stats.waiting},
        "context": {"per_slot": info.context_length, "trained": info.train_context_length},
        "backends": list(info.backends),
        "devices": [device_row(d) for d in info.devices],
    }


def status_body(state: AppState) -> dict[str, Any]:
    if state.draining:
        status = "draining"
    elif state.serving is not None:
        status = "ok"
    else:
        status = "error" if state.load_error else "loading"
    body: dict[str, Any] = {
        "status": status,
        "version": _version(),
        "started_at": state.started_at,
        "uptime_s": round(state.uptime(), 3),
    }
    if state.load_error:
        body["error"] = state.load_error
    if state.serving is not None:
        body |= serving_status(state.serving)
    return body


@router.get("/v1/status")
async def status(state: AppState = Depends(app_state)) -> dict[str, Any]:
    return status_body(state)
