from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from hermesd.server.routes.deps import app_state
from hermesd.server.state import AppState

router = APIRouter()


@router.get("/health")
async def health(state: AppState = Depends(app_state)) -> JSONResponse:
    # llama-server's convention: 503 while loading, 200 once requests can be served
    if state.serving is not None and not state.draining:
        engine = state.serving.engine
        if engine.ready():
            return JSONResponse({"status": "ok"})
        # an engine that depends on another server (runtime/engine/upstream.py) says why it is not
        reason = getattr(engine, "unready_reason", None)
        if callable(reason) and reason():
            return JSONResponse({"status": "unavailable", "error": reason()}, status_code=503)
    if state.load_error:
        return JSONResponse({"status": "error", "error": state.load_error}, status_code=503)
    status = "draining" if state.draining else "loading"
    return JSONResponse({"status": status}, status_code=503)
