"""No request body yields a 5xx: generated requests against the real daemon.

Each example starts from a valid request of one endpoint and spoils it: a value anywhere in it is
replaced by any JSON value (lone surrogates, huge numbers, deep nesting included), a key is dropped, or
a key is added. Whatever comes back must be a 2xx or a 4xx in OpenAI's error shape, and the daemon must
still answer. The seed is fixed (derandomize) so a failure repeats.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.server_process import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BASES: list[tuple[str, dict[str, Any]]] = [
    (
        "/v1/chat/completions",
        {
            "model": "MODEL",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]},
            ],
            "max_tokens": 8,
            "temperature": 0.5,
            "stop": ["\n\n"],
            "think": False,
        },
    ),
    (
        "/v1/chat/completions",
        {
            "model": "MODEL",
            "messages": [{"role": "user", "content": "call it"}],
            "max_tokens": 8,
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
                    },
                }
            ],
            "response_format": {"type": "json_object"},
        },
    ),
    ("/v1/completions", {"model": "MODEL", "prompt": "Once upon", "max_tokens": 8, "seed": 7}),
    ("/v1/adapters", {"name": "nothing-here"}),
]

_text = st.text(st.characters(codec=None, exclude_categories=[]), max_size=20) | st.sampled_from(
    ["\ud800", "a\udfffb", "", "MODEL", "user", "assistant", "tool", "function", "json_schema", "\x00"]
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | _text
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*path, i))
    return out


@st.composite
def spoiled_requests(draw: st.DrawFn) -> tuple[str, Any]:
    endpoint, base = draw(st.sampled_from(BASES))
    body: Any = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(body)))
        how = draw(st.sampled_from(["replace", "drop", "add"]))
        if not path:
            body = draw(_values) if how == "replace" else body
            continue
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        if how == "replace":
            parent[path[-1]] = draw(_values)
        elif how == "drop":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(_text)] = draw(_values)
    stream = draw(st.booleans())
    if isinstance(body, dict) and stream and endpoint != "/v1/adapters":
        body["stream"] = True
    return endpoint, body


@pytest.fixture(scope="module")
def target(qwen3_server: ServerProcess) -> tuple[ServerProcess, str]:
    model = httpx.get(qwen3_server.base_url + "/v1/models").json()["data"][0]["id"]
    return qwen3_server, model


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(request=spoiled_requests())
def test_no_request_body_yields_a_5xx(target: tuple[ServerProcess, str], request: tuple[str, Any]) -> None:
    server, model = target
    endpoint, body = request
    # NaN and Infinity go on the wire as Python's json writes them, as some clients do
    text = json.dumps(body).replace('"MODEL"', json.dumps(model))
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        r = http.post(endpoint, content=text.encode(), headers={"content-type": "application/json"})
        assert r.status_code < 500, (endpoint, text, r.text)
        if r.status_code >= 400:
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}, r.text
        else:
            # after a 200 a stream may still end in an error event: never a server error either
            for line in r.text.splitlines():
                event = line.removeprefix("data: ")
                if line.startswith("data: ") and event != "[DONE]" and "error" in json.loads(event):
                    assert json.loads(event)["error"]["type"] != "server_error", r.text
        assert http.get("/health").status_code == 200
    assert server.proc.poll() is None
