"""The chat page at `/`: served from the package with a strict Content-Security-Policy, public while
the API stays behind its key, and gone with `--no-ui`. (The page itself runs in tests/e2e.)"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hermesd.cli.main import cli
from hermesd.server.routes.ui import ui_files
from hermesd.server.settings import load_settings

REPO = Path(__file__).parents[2]
UI = REPO / "server" / "ui"
KEY = "user-key-123"


def page_assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/ui/[^"]+)"', html)


def csp_directives(header: str) -> dict[str, list[str]]:
    out = {}
    for part in header.split(";"):
        name, *values = part.split()
        out[name] = values
    return out


async def test_page_and_its_files_carry_the_policy(client: Any) -> None:
    http, _ = client
    r = await http.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    # no inline script anywhere: every <script> names its file
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts and all('src="/ui/' in s for s in scripts)
    assert not re.search(r"\son[a-z]+=", html), "inline event handlers need 'unsafe-inline'"
    csp = csp_directives(r.headers["content-security-policy"])
    assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"] and csp["default-src"] == ["'self'"]
    assert csp["object-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
    assert not any("unsafe" in v for values in csp.values() for v in values)
    assets = page_assets(html)
    assert {"/ui/app.js", "/ui/style.css"} <= set(assets)
    types = {".js": "text/javascript", ".css": "text/css"}
    for path in assets:
        a = await http.get(path)
        assert a.status_code == 200, path
        assert a.headers["content-type"].startswith(types[Path(path).suffix]), path
        assert a.headers["content-security-policy"] == r.headers["content-security-policy"]
        assert a.headers["x-content-type-options"] == "nosniff"


async def test_every_module_the_page_imports_is_served(client: Any) -> None:
    http, _ = client
    seen, todo = set(), ["app.js"]
    while todo:
        name = todo.pop()
        seen.add(name)
        r = await http.get(f"/ui/{name}")
        assert r.status_code == 200, name
        todo += [m for m in re.findall(r'from "\./([\w-]+\.js)"', r.text) if m not in seen]
    assert {"app.js", "api.js", "markdown.js", "store.js"} <= seen


def test_no_script_assigns_html() -> None:
    # model text is untrusted: the page builds DOM nodes, and no file holds an HTML sink to misuse
    sinks = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function")
    for js in UI.glob("*.js"):
        assert not sinks.search(js.read_text()), js.name


@pytest.mark.parametrize(
    "path", ["/ui/nope.js", "/ui/..%2fapp.py", "/ui/%2e%2e/routes/ui.py", "/ui/.hidden.js", "/ui/APP.JS"]
)
async def test_only_the_page_files_are_served(client: Any, path: str) -> None:
    http, _ = client
    r = await http.get(path)
    assert r.status_code == 404, (path, r.text[:200])


async def test_the_page_loads_without_the_key_the_api_needs(make_client: Any) -> None:
    async with make_client(api_key=[KEY]) as (http, _):
        assert (await http.get("/")).status_code == 200
        assert (await http.get("/ui/app.js")).status_code == 200
        assert (await http.get("/v1/models")).status_code == 401
        assert (await http.get("/v1/models", headers={"authorization": f"Bearer {KEY}"})).status_code == 200
        # only reading the page is public
        assert (await http.post("/", json={})).status_code == 401


async def test_the_page_keeps_the_host_check(client: Any) -> None:
    http, _ = client
    assert (await http.get("/", headers={"host": "evil.example:8000"})).status_code == 400


async def test_no_ui_turns_the_page_off(make_client: Any) -> None:
    async with make_client(ui=False) as (http, _):
        assert (await http.get("/")).status_code == 404
        assert (await http.get("/ui/app.js")).status_code == 404
        assert (await http.get("/v1/models")).status_code == 200


def test_no_ui_is_a_flag_and_a_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "--no-ui" in CliRunner().invoke(cli, ["serve", "--help"]).output
    assert load_settings({}).ui is True
    assert load_settings({"ui": False}).ui is False
    monkeypatch.setenv("HERMESD_UI", "false")
    assert load_settings({}).ui is False


def test_the_package_carries_every_page_file() -> None:
    # a non-editable install copies only what package-data names (.ci/user-path checks it for real)
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = data["hermesd.server"]
    files = sorted(p.name for p in UI.iterdir() if p.is_file())
    assert files and all(any(fnmatch.fnmatch(f"ui/{f}", pat) for pat in patterns) for f in files)
    assert set(ui_files()) == set(files)
