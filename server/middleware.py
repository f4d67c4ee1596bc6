"""One ASGI middleware for what every request goes through before a route sees it.

In order: a request id (echoed from `x-request-id` or made up) on every response; the `Host`
header check against DNS rebinding; the API-key check (`/health` and the chat page's static files
stay public; `/v1/adapters` needs an admin key); the body-size cap (413); one access-log line when
the response ends. Pure ASGI, not BaseHTTPMiddleware, so streaming responses and client-disconnect
detection pass through untouched.
"""

from __future__ import annotations

import hmac
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from hermesd.server import request_log
from hermesd.server.errors import APIError, error_body
from hermesd.server.settings import LOOPBACK_HOSTS, Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = ("/health",)
# The chat page and its files are static and hold nothing secret; the API calls the page makes
# carry the key the user types, so the page must load without one (GET only).
PAGE_PATHS = ("/",)
PAGE_PREFIXES = ("/ui/",)
ADMIN_PREFIXES = ("/v1/adapters",)
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _error(status: int, message: str, type: str, code: str | None) -> APIError:
    return APIError(status, message, type=type, code=code)


class HermesdMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.user_keys = [k.encode() for k in settings.all_api_keys()]
        self.admin_keys = [k.encode() for k in settings.admin_keys()]
        allowed = {h.lower() for h in settings.allowed_hosts}
        # With no key, the loopback default is the only protection, so Host must be a loopback
        # name (or one the operator listed): a rebinding page cannot reach us under its own name.
        self.check_host = bool(allowed) or not (self.user_keys or self.admin_keys) or settings.is_loopback()
        self.allowed_hosts = allowed | set(LOOPBACK_HOSTS) | {settings.host.lower()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        rid = headers.get("x-request-id", "")
        if not _SAFE_ID.match(rid):
            rid = f"req-{uuid.uuid4().hex[:24]}"
        scope.setdefault("state", {})["request_id"] = rid
        started = time.monotonic()
        record = request_log.open_record(id=rid, method=scope["method"], path=scope["path"], status=0)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                record["status"] = message["status"]
                message["headers"] = [*list(message.get("headers", [])), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            refusal = self._refusal(scope, headers)
            if refusal is not None:
                await self._respond(send_with_id, refusal, scope["path"])
                return
            body, too_big = await self._read_body(receive, headers)
            if too_big:
                await self._respond(
                    send_with_id,
                    _error(
                        413,
                        f"request body larger than {self.settings.max_body_bytes} bytes",
                        "invalid_request_error",
                        "request_too_large",
                    ),
                    scope["path"],
                )
                return
            await self.app(scope, _replay(body, receive), send_with_id)
        finally:
            # for a stream this is when the last event was sent, or the client went away
            record["ms"] = round((time.monotonic() - started) * 1000, 1)
            if scope["path"] != "/health":
                request_log.emit(record)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> APIError | None:
        if self.check_host:
            host = headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
            if name.lower() not in self.allowed_hosts:
                return _error(
                    400,
                    f"host '{host}' is not allowed here (see --allowed-hosts)",
                    "invalid_request_error",
                    "invalid_host",
                )
        path: str = scope["path"]
        # CORS preflights carry no credentials by design; they reveal nothing and change nothing
        if scope["method"] == "OPTIONS":
            return None
        if path in PUBLIC_PATHS or not (self.user_keys or self.admin_keys):
            return None
        if scope["method"] in ("GET", "HEAD") and (path in PAGE_PATHS or path.startswith(PAGE_PREFIXES)):
            return None
        key = _presented_key(headers)
        admin_ok = key is not None and any(hmac.compare_digest(key, k) for k in self.admin_keys)
        if path.startswith(ADMIN_PREFIXES):
            if admin_ok:
                return None
            if not self.admin_keys:
                return _error(
                    403,
                    "management endpoints need an admin key; start hermesd with --admin-api-key",
                    "permission_error",
                    "admin_key_required",
                )
            return _error(
                401, "this endpoint needs an admin API key", "authentication_error", "invalid_api_key"
            )
        if admin_ok or (key is not None and any(hmac.compare_digest(key, k) for k in self.user_keys)):
            return None
        return _error(
            401,
            "Incorrect or missing API key. Send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'.",
            "authentication_error",
            "invalid_api_key",
        )

    async def _read_body(self, receive: Receive, headers: dict[str, str]) -> tuple[bytes, bool]:
        limit = self.settings.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return b"", True
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return b"", True
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), False

    @staticmethod
    async def _respond(send: Send, err: APIError, path: str) -> None:
        body = json.dumps(error_body(err, path)).encode()  # in the shape of the API called
        await send(
            {
                "type": "http.response.start",
                "status": err.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _presented_key(headers: dict[str, str]) -> bytes | None:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip().encode()
    if "x-api-key" in headers:
        return headers["x-api-key"].strip().encode()
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # http.disconnect, when the client goes away

    return replay
