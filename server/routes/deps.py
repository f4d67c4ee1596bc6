"""Route dependencies: the serving objects, available once the model is loaded."""

from __future__ import annotations

from fastapi import Request

from hermesd.server.errors import APIError
from hermesd.server.state import AppState, Serving


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.hermesd
    return state


def serving(request: Request) -> Serving:
    state = app_state(request)
    if state.draining:
        raise APIError(
            503,
            "the server is shutting down",
            type="server_error",
            code="shutting_down",
            headers={"Retry-After": "5"},
        )
    if state.serving is None:
        if state.load_error:
            raise APIError(
                503,
                f"the model failed to load: {state.load_error}",
                type="server_error",
                code="model_load_failed",
            )
        raise APIError(
            503,
            "the model is still loading",
            type="server_error",
            code="model_loading",
            headers={"Retry-After": "2"},
        )
    return state.serving
