from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import ConfigDict

from hermesd.server.protocol.text import RequestBody
from hermesd.server.routes.deps import serving
from hermesd.server.state import Serving

router = APIRouter()


class LoadAdapter(RequestBody):
    model_config = ConfigDict(extra="forbid")
    name: str  # checked by the store's name rule, so the CLI and this endpoint say the same thing


@router.get("/v1/adapters")
async def list_adapters(s: Serving = Depends(serving)) -> dict[str, Any]:
    return await s.adapters.list()


@router.post("/v1/adapters")
async def load_adapter(body: LoadAdapter, s: Serving = Depends(serving)) -> dict[str, Any]:
    return await s.adapters.load(body.name)


@router.delete("/v1/adapters/{name}")
async def unload_adapter(name: str, s: Serving = Depends(serving)) -> dict[str, Any]:
    return await s.adapters.unload(name)
