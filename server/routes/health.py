from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from hermesd.server.routes.deps import app_state
from hermesd.server.state import AppState

router = APIRouter()


@router.get("/health")
async def health(state: AppState = Depends(app_state)) -> JSONResponse:
    # llama-server's convention: 503 while loading, 200 once requests can be served
    if state.serving is not None and not state.draining and state.serving.engine.ready():
        return JSONResponse({"status": "ok"})
    if state.load_error:
        return JSONResponse({"status": "error", "error": state.load_error}, status_code=503)
    status = "draining" if state.draining else "loading"
    return JSONResponse({"status": status}, status_code=503)
