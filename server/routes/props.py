"""GET /props and /v1/props in llama-server's shape: what agents (Hermes Agent among them) read to
learn the context of a sequence (`default_generation_settings.n_ctx`) and the number of slots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends

from hermesd.server.routes.deps import app_state, serving
from hermesd.server.serving_common import DEFAULT_SAMPLING
from hermesd.server.state import AppState, Serving

router = APIRouter()


@router.get("/props")
@router.get("/v1/props")
async def props(s: Serving = Depends(serving), state: AppState = Depends(app_state)) -> dict[str, Any]:
    info = s.engine.info
    d = DEFAULT_SAMPLING
    return {
        "default_generation_settings": {
            "n_ctx": info.context_length,
            "params": {
                "n_predict": state.settings.max_tokens_limit,
                "temperature": d.temperature,
                "top_p": d.top_p,
                "top_k": d.top_k,
                "min_p": d.min_p,
            },
        },
        "total_slots": info.parallel,
        # the file's name only: the server's directories are nobody's business
        "model_path": Path(info.path).name,
        "model_alias": s.registry.primary,
        "n_ctx_train": info.train_context_length,
        "modalities": {"vision": False, "audio": False},
        "chat_template": info.chat_template or "",
        "bos_token": info.bos_token,
        "eos_token": info.eos_token,
    }
