"""The chat page in a real browser: Debian's chromium driven by Playwright, against a real
`hermesd serve` on the tiny model (with an API key, so the page has to ask for it).

Nothing here downloads a browser: Playwright launches /usr/bin/chromium. Without it the module
skips locally and fails under CI=true, where .ci/run installs it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server_process import ServerProcess, run_server
from tests.fixtures.behaviours import LONG_PROMPT, QUESTIONS
from tests.fixtures.tiny_models import tiny_model

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY = "page-key-0123456789"
FRANCE = next(q for q in QUESTIONS if q.key == "france")
SUM = next(q for q in QUESTIONS if q.key == "sum")
TIMEOUT_MS = 30_000


def _missing_browser() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (the test extra)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _missing_browser()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("page")
    flags = ("--parallel", "2", "--ctx", "4096", "--max-tokens-limit", "4000", "--api-key", KEY)
    with run_server(tiny_model("qwen3"), tmp, *flags) as server:
        yield server


@pytest.fixture
def page(browser: Any, page_server: ServerProcess) -> Iterator[Any]:
    """A fresh browser context on the page; CSP violations reported by the browser fail the test."""
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    p = context.new_page()
    violations: list[str] = []
    p.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    p.on("pageerror", lambda e: violations.append(f"page error: {e}"))
    yield p
    context.close()
    assert not violations, violations


def open_with_key(page: Any, server: ServerProcess) -> None:
    """Load the page with the key already in this tab's sessionStorage (as after the prompt)."""
    page.add_init_script(f"sessionStorage.setItem('hermesd.apiKey', {json.dumps(KEY)})")
    page.goto(server.base_url + "/")
    page.locator("#model option").first.wait_for(state="attached")


def send(page: Any, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def last_answer(page: Any) -> Any:
    return page.locator(".msg.assistant").last


def wait_idle(page: Any) -> None:
    page.locator("#send").wait_for(state="visible")
    page.locator(".msg.streaming").wait_for(state="detached")


def cancelled(server: ServerProcess) -> float:
    text = httpx.get(
        server.base_url + "/metrics", headers={"authorization": f"Bearer {KEY}"}, timeout=10
    ).text
    m = re.search(r'^hermesd_requests_finished_total\{reason="cancelled"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_key_prompt_stream_reasoning_regenerate_edit(page: Any, page_server: ServerProcess) -> None:
    page.goto(page_server.base_url + "/")
    # the page loaded without a key; its first API call got a 401, so it asks for one
    page.locator("#key-dialog").wait_for(state="visible")
    page.fill("#key-input", KEY)
    page.press("#key-input", "Enter")
    page.locator("#model option").first.wait_for(state="attached")
    assert page.evaluate("sessionStorage.getItem('hermesd.apiKey')") == KEY
    assert page.evaluate("localStorage.getItem('hermesd.apiKey')") is None

    page.check("#think")
    page.click("#params-toggle")
    page.fill("#temperature", "0")
    page.dispatch_event("#temperature", "change")
    requests: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda r: requests.append(json.loads(r.post_data)) if r.url.endswith("/chat/completions") else None,
    )
    with page.expect_response("**/v1/chat/completions") as answered:
        send(page, FRANCE.question)
    response = answered.value
    assert response.headers["content-type"].startswith("text/event-stream")
    wait_idle(page)
    answer = last_answer(page)
    assert answer.locator(".content").inner_text().strip() == FRANCE.answer
    reasoning = answer.locator("details.reasoning")
    assert reasoning.is_visible() and reasoning.get_attribute("open") is None  # folded once answered
    reasoning.locator("summary").click()
    assert answer.locator(".reasoning-text").inner_text().strip() == FRANCE.reasoning
    assert re.search(r"\d+ tokens · [\d.]+ tokens/s", page.inner_text("#stats"))
    (body,) = requests
    assert body["stream"] is True and body["think"] is True and body["temperature"] == 0
    assert body["messages"] == [{"role": "user", "content": FRANCE.question}]

    # the conversation is kept in localStorage: a reload shows it again, and the key is still known
    page.reload()
    page.locator("#model option").first.wait_for(state="attached")
    assert page.locator(".msg.user .content").inner_text() == FRANCE.question
    assert last_answer(page).locator(".content").inner_text().strip() == FRANCE.answer
    assert not page.locator("#key-dialog").is_visible()

    # regenerate asks again for the same turn; greedy decoding gives the same answer
    last_answer(page).locator("button.regenerate").click()
    wait_idle(page)
    assert page.locator(".msg").count() == 2
    assert last_answer(page).locator(".content").inner_text().strip() == FRANCE.answer
    assert requests[-1]["messages"] == requests[0]["messages"]

    # edit replaces the question and what followed it
    page.locator(".msg.user button.edit").click()
    page.fill(".msg.user textarea", SUM.question)
    page.locator(".msg.user button.save").click()
    wait_idle(page)
    assert page.locator(".msg").count() == 2
    assert page.locator(".msg.user .content").inner_text() == SUM.question
    assert last_answer(page).locator(".content").inner_text().strip() == SUM.answer
    assert requests[-1]["messages"] == [{"role": "user", "content": SUM.question}]


def test_stop_ends_the_generation_on_the_server(page: Any, page_server: ServerProcess) -> None:
    open_with_key(page, page_server)
    page.click("#params-toggle")
    page.fill("#max_tokens", "3900")
    page.dispatch_event("#max_tokens", "change")

    # the tiny model would end its count on its own: keep it going until it is stopped
    def endless(route: Any) -> None:
        body = json.loads(route.request.post_data)
        assert body["max_tokens"] == 3900
        route.continue_(post_data=json.dumps(dict(body, ignore_eos=True)))

    page.route("**/v1/chat/completions", endless, times=1)
    before = cancelled(page_server)
    send(page, LONG_PROMPT)
    content = last_answer(page).locator(".content")
    # (wait_for_function would evaluate a string, which the page's CSP refuses: poll instead)
    while len(content.inner_text()) < 10:
        page.wait_for_timeout(20)
    page.click("#stop")
    wait_idle(page)
    assert page.locator("#stop").is_hidden()
    stopped = content.inner_text()
    assert stopped and "stopped" in last_answer(page).locator(".msg-stats").inner_text()
    page.wait_for_timeout(300)
    assert content.inner_text() == stopped  # nothing more arrives
    deadline_ms = 10_000
    while cancelled(page_server) < before + 1 and deadline_ms > 0:
        page.wait_for_timeout(100)
        deadline_ms -= 100
    assert cancelled(page_server) == before + 1


def sse(*deltas: dict[str, Any]) -> str:
    chunks = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def test_model_markup_is_text_and_markdown_renders(page: Any, page_server: ServerProcess) -> None:
    open_with_key(page, page_server)
    attack = "<img src=x onerror=window.__pwned=1>"
    reasoning_attack = "<img src=x onerror=window.__pwned=2>"
    markdown = "\n\nSome **bold** and `code`:\n\n```html\n<script>window.__pwned=3</script>\n```\n"
    stream = sse(
        {"role": "assistant", "content": ""},
        {"reasoning_content": "Think " + reasoning_attack},
        {"content": "Look: " + attack},
        {"content": markdown},
    )
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=stream),
        times=1,
    )
    send(page, "Show me markup")
    wait_idle(page)
    answer = last_answer(page)
    assert answer.locator(".content").get_by_text(attack).is_visible()
    answer.locator("details.reasoning summary").click()
    assert answer.locator(".reasoning-text").get_by_text(reasoning_attack).is_visible()
    code = answer.locator("pre > code")
    assert code.inner_text().strip() == "<script>window.__pwned=3</script>"
    assert answer.locator("strong").inner_text() == "bold"
    assert page.locator("#messages img, #messages script").count() == 0
    page.wait_for_timeout(200)  # time for an image error to fire, had one been made
    assert page.evaluate("window.__pwned") is None


def test_picker_lists_adapters_and_sends_the_choice(page: Any, page_server: ServerProcess) -> None:
    base = httpx.get(
        page_server.base_url + "/v1/models", headers={"authorization": f"Bearer {KEY}"}, timeout=10
    ).json()["data"][0]
    adapter = {"id": f"{base['id']}:pirate", "object": "model", "parent": base["id"], "root": base["id"]}
    # no adapter is loaded in this server: add one to the listing the page reads
    page.route(
        "**/v1/models",
        lambda route: route.fulfill(json={"object": "list", "data": [base, adapter]}),
        times=1,
    )
    open_with_key(page, page_server)
    assert page.locator("#model > option").all_inner_texts() == [base["id"]]
    assert page.locator("#model optgroup[label=Adapters] > option").get_attribute("value") == adapter["id"]
    page.select_option("#model", adapter["id"])
    sent: list[dict[str, Any]] = []

    def answer(route: Any) -> None:
        sent.append(json.loads(route.request.post_data))
        route.fulfill(status=200, content_type="text/event-stream", body=sse({"content": "Arr."}))

    page.route("**/v1/chat/completions", answer, times=1)
    send(page, "Hello")
    wait_idle(page)
    assert last_answer(page).locator(".content").inner_text() == "Arr."
    assert sent[0]["model"] == adapter["id"] and sent[0]["think"] is False


def test_an_error_after_the_stream_began_is_shown(page: Any, page_server: ServerProcess) -> None:
    open_with_key(page, page_server)
    body = sse({"content": "Part"}).replace(
        "data: [DONE]",
        'data: {"error": {"message": "engine <b>failed</b>", "type": "server_error"}}\n\ndata: [DONE]',
    )
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=body),
        times=1,
    )
    send(page, "Hello")
    wait_idle(page)
    assert page.inner_text("#error") == "engine <b>failed</b>"  # as text, like model output
    assert last_answer(page).locator(".content").inner_text() == "Part"
