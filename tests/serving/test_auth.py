"""Who gets in: the API-key matrix, the admin key for management, Host checks, body caps, ids."""

from __future__ import annotations

from typing import Any

import pytest

from tests.serving.fake_engine import FakeEngine

BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
USER, ADMIN = "user-key-123", "admin-key-456"

MATRIX = [
    # (method, path, headers, status)
    ("GET", "/health", {}, 200),
    ("GET", "/v1/models", {}, 401),
    ("GET", "/v1/models", {"authorization": "Bearer wrong"}, 401),
    ("GET", "/v1/models", {"authorization": f"Bearer {USER}"}, 200),
    ("GET", "/v1/models", {"x-api-key": USER}, 200),
    ("GET", "/v1/models", {"authorization": f"Bearer {ADMIN}"}, 200),
    ("GET", "/v1/models", {"authorization": f"Basic {USER}"}, 401),
    ("POST", "/v1/chat/completions", {}, 401),
    ("POST", "/v1/chat/completions", {"authorization": f"Bearer {USER}"}, 200),
    ("GET", "/metrics", {}, 401),
    ("GET", "/v1/adapters", {"authorization": f"Bearer {USER}"}, 401),
    ("GET", "/v1/adapters", {"authorization": f"Bearer {ADMIN}"}, 200),
    ("DELETE", "/v1/adapters/x", {"authorization": f"Bearer {USER}"}, 401),
    ("POST", "/v1/adapters", {}, 401),
]


@pytest.mark.parametrize(("method", "path", "headers", "status"), MATRIX)
async def test_auth_matrix(
    make_client: Any, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    async with make_client(FakeEngine(), api_key=[USER], admin_api_key=[ADMIN]) as (http, _):
        r = await http.request(method, path, headers=headers, json=BODY if method == "POST" else None)
    assert r.status_code == status, r.text
    if status == 401:
        err = r.json()["error"]
        assert err["type"] == "authentication_error" and err["code"] == "invalid_api_key"


async def test_management_needs_an_admin_key_to_exist(make_client: Any) -> None:
    async with make_client(FakeEngine(), api_key=[USER]) as (http, _):
        r = await http.get("/v1/adapters", headers={"authorization": f"Bearer {USER}"})
    assert r.status_code == 403 and "admin" in r.json()["error"]["message"]


async def test_no_keys_on_loopback_is_open(client: Any) -> None:
    http, _ = client
    assert (await http.get("/v1/models")).status_code == 200
    assert (await http.get("/v1/adapters")).status_code == 200


@pytest.mark.parametrize(
    ("host", "status"),
    [("127.0.0.1:8000", 200), ("localhost", 200), ("[::1]:8000", 200), ("evil.example:8000", 400)],
)
async def test_host_header_is_checked_without_keys(client: Any, host: str, status: int) -> None:
    http, _ = client
    r = await http.get("/v1/models", headers={"host": host})
    assert r.status_code == status
    if status == 400:
        assert r.json()["error"]["code"] == "invalid_host"


async def test_allowed_hosts_extend_the_list(make_client: Any) -> None:
    async with make_client(FakeEngine(), allowed_hosts=["hermes.lan"]) as (http, _):
        assert (await http.get("/v1/models", headers={"host": "hermes.lan:8000"})).status_code == 200
        assert (await http.get("/v1/models", headers={"host": "other.lan"})).status_code == 400


async def test_body_size_cap(make_client: Any) -> None:
    async with make_client(FakeEngine(), max_body_bytes=2048) as (http, _):
        big = {"model": "fake-model", "messages": [{"role": "user", "content": "x" * 5000}]}
        r = await http.post("/v1/chat/completions", json=big)
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        assert (await http.post("/v1/chat/completions", json=BODY)).status_code == 200


async def test_request_id_is_echoed_or_made(client: Any) -> None:
    http, _ = client
    r = await http.post("/v1/chat/completions", json=BODY, headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = await http.post("/v1/chat/completions", json=dict(BODY, stream=True))
    assert r.headers["x-request-id"].startswith("req-")
    r = await http.get("/v1/models", headers={"x-request-id": "bad id with spaces"})
    assert r.headers["x-request-id"].startswith("req-")


async def test_cors_is_off_unless_configured(make_client: Any) -> None:
    pre = {"origin": "https://app.example", "access-control-request-method": "POST"}
    async with make_client(FakeEngine()) as (http, _):
        r = await http.post("/v1/chat/completions", json=BODY, headers={"origin": "https://app.example"})
        assert "access-control-allow-origin" not in r.headers
    async with make_client(FakeEngine(), cors_origin=["https://app.example"], api_key=[USER]) as (http, _):
        r = await http.options("/v1/chat/completions", headers=pre)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        r = await http.options("/v1/chat/completions", headers=dict(pre, origin="https://evil.example"))
        assert r.headers.get("access-control-allow-origin") != "https://evil.example"
