"""The chat page: `GET /` and its static files under `/ui/`, read from the package (server/ui/).

The page is static and public (the middleware lets `/` and `/ui/` through without a key); the API
calls it makes carry the key the user types. Everything it shows from the model is built with
`textContent`, and the Content-Security-Policy below is the second wall: only this origin's own
scripts run (no inline script, no eval), so text that slips into markup still cannot execute.
`--no-ui` leaves this router out, and `/` is a 404.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from hermesd.server.errors import APIError

router = APIRouter()

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    # the files change with the package; revalidating is cheap on loopback
    "cache-control": "no-cache",
}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Only plain names with a known type are served: no directories, no dot-files, nothing a path in a
# URL could steer outside the folder.
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(html|js|css|svg)$")


@cache
def ui_files() -> dict[str, bytes]:
    """The page's files by name, read once from the installed package."""
    folder = resources.files("hermesd.server").joinpath("ui")
    return {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file() and _NAME.match(f.name)}


def _file(name: str) -> Response:
    body = ui_files().get(name) if _NAME.match(name) else None
    if body is None:
        raise APIError(404, f"no file {name!r} in the chat page", code="not_found")
    return Response(body, media_type=_TYPES[name[name.rindex(".") :]], headers=_HEADERS)


@router.get("/", include_in_schema=False)
async def page() -> Response:
    return _file("index.html")


@router.get("/ui/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    return _file(name)
