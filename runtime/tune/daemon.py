"""A small client for a running hermesd: adapter management and chat (for synthetic thinking).

Speaks the server's HTTP contract only (`/v1/adapters`, `/v1/models`, `/v1/chat/completions`), so
the runtime never imports the server. Errors become `DaemonError` with the server's own message.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import httpx

from hermesd.runtime.tune.base import TuneError

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8000"
ADMIN_KEY_ENV = "HERMESD_ADMIN_API_KEY"
URL_ENV = "HERMESD_SERVE_URL"


class DaemonError(TuneError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DaemonUnreachable(DaemonError):
    pass


def default_url() -> str:
    return os.environ.get(URL_ENV) or DEFAULT_URL


@dataclass
class DaemonClient:
    url: str
    api_key: str | None = None
    timeout: float = 60.0
    transport: httpx.BaseTransport | None = None  # tests pass a MockTransport

    def _client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(
            base_url=self.url.rstrip("/"), headers=headers, timeout=self.timeout, transport=self.transport
        )

    def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        try:
            with self._client() as client:
                response = client.request(method, path, json=body)
        except httpx.ConnectError:
            raise DaemonUnreachable(f"no hermesd is answering at {self.url}") from None
        except httpx.TimeoutException:
            raise DaemonUnreachable(
                f"hermesd at {self.url} did not answer within {self.timeout:.0f} s"
            ) from None
        except httpx.HTTPError as exc:
            raise DaemonUnreachable(f"cannot talk to hermesd at {self.url}: {exc}") from None
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code >= 400:
            raise DaemonError(_error_message(response.status_code, data, self.url), response.status_code)
        return data if isinstance(data, dict) else {"data": data}

    def list_adapters(self) -> list[dict[str, Any]]:
        data = self._request("GET", "/v1/adapters").get("data", [])
        return [d for d in data if isinstance(d, dict)]

    def load(self, name: str) -> dict[str, Any]:
        return self._request("POST", "/v1/adapters", {"name": name})

    def unload(self, name: str) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/adapters/{name}")

    def models(self) -> list[dict[str, Any]]:
        data = self._request("GET", "/v1/models").get("data", [])
        return [d for d in data if isinstance(d, dict)]

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/v1/chat/completions", body)


def _error_message(status: int, data: Any, url: str) -> str:
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if status in (401, 403):
        hint = f" (pass --api-key or set {ADMIN_KEY_ENV} to an admin key)"
        return f"hermesd at {url} refused the request: {message or 'unauthorized'}{hint}"
    if status == 404 and message is None:
        return f"hermesd at {url} has no such endpoint or adapter (HTTP 404)"
    return f"hermesd at {url}: {message or f'HTTP {status}'}"


@dataclass(frozen=True)
class HotLoad:
    loaded: bool
    model_id: str | None
    message: str


def hot_load(client: DaemonClient, name: str, *, reload: bool) -> HotLoad:
    """Load a registered adapter into the running daemon. With `reload`, an adapter of that name
    already loaded (an older version) is unloaded first so the new file takes its place."""
    try:
        try:
            result = client.load(name)
        except DaemonError as exc:
            if exc.status != 409 or not reload:
                raise
            client.unload(name)
            result = client.load(name)
    except DaemonUnreachable as exc:
        return HotLoad(False, None, f"{exc}; load it later with: hermesd adapters load {name}")
    except DaemonError as exc:
        if exc.status == 409:
            return HotLoad(True, None, f"adapter {name} was already loaded in the daemon")
        return HotLoad(False, None, f"{exc}; the adapter is registered but not loaded")
    model_id = result.get("id")
    return HotLoad(True, str(model_id) if model_id else None, f"loaded into hermesd at {client.url}")
