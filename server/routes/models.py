from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from hermesd.server.routes.deps import serving
from hermesd.server.state import Serving

router = APIRouter()


@router.get("/v1/models")
async def list_models(s: Serving = Depends(serving)) -> dict[str, Any]:
    return {"object": "list", "data": s.registry.listing()}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, s: Serving = Depends(serving)) -> dict[str, Any]:
    resolved = s.registry.resolve(model_id)
    return next(m for m in s.registry.listing() if m["id"] == resolved.id)
