"""What an agent needs from the server (issue 16, parts 1, 4 and 6): the context it can discover
(`/v1/models`, `/v1/props`, `/props`), max_tokens beyond the context clamped rather than refused,
the overflow error agents parse, model aliases, and the reasoning field and effort levels."""

from __future__ import annotations

from typing import Any

import pytest

from hermesd.models.formats.reasoning import REASONING_EFFORTS
from tests.harness import chat_http, parse_sse
from tests.serving.fake_engine import FakeEngine

MSG = [{"role": "user", "content": "hi"}]
BODY = {"model": "fake-model", "messages": MSG}


async def test_models_carry_the_allocated_context(make_client: Any) -> None:
    async with make_client(FakeEngine(context=65536)) as (http, _):
        listing = (await http.get("/v1/models")).json()["data"]
        one = (await http.get("/v1/models/fake-model")).json()
    for entry in (*listing, one):
        assert entry["context_length"] == entry["max_model_len"] == 65536
        assert entry["meta"]["n_ctx"] == 65536
        assert set(entry["meta"]) == {"n_ctx", "n_ctx_train", "n_params", "size"}


@pytest.mark.parametrize("path", ["/v1/props", "/props"])
async def test_props_in_llama_servers_shape(make_client: Any, path: str) -> None:
    engine = FakeEngine(context=65536, path="/srv/secret/dir/hermes-4-14b-Q4_K_M.gguf")
    async with make_client(engine) as (http, _):
        r = await http.get(path)
    assert r.status_code == 200, r.text
    props = r.json()
    assert props["default_generation_settings"]["n_ctx"] == 65536
    assert props["total_slots"] == 1
    assert props["model_path"] == "hermes-4-14b-Q4_K_M.gguf"  # no directories


async def test_props_needs_the_api_key_when_one_is_set(make_client: Any) -> None:
    async with make_client(api_key=["k1"]) as (http, _):
        assert (await http.get("/v1/props")).status_code == 401
        r = await http.get("/v1/props", headers={"authorization": "Bearer k1"})
        assert r.status_code == 200


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_beyond_the_limit_is_clamped(make_client: Any, stream: bool, field: str) -> None:
    # Hermes Agent sends max_tokens equal to the context it found
    engine = FakeEngine(finish_reason="length")
    async with make_client(engine, max_tokens_limit=1000) as (http, _):
        result = await chat_http(http, dict(BODY, **{field: 65536}), stream)
    assert result.finish_reason == "length"
    assert engine.requests[-1].max_tokens == 1000


async def test_completions_clamp_max_tokens_too(make_client: Any) -> None:
    engine = FakeEngine()
    async with make_client(engine, max_tokens_limit=1000) as (http, _):
        body = {"model": "fake-model", "prompt": "x", "max_tokens": 10**6}
        r = await http.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    assert engine.requests[-1].max_tokens == 1000


@pytest.mark.parametrize("stream", [False, True])
async def test_a_prompt_that_does_not_fit_states_the_limit(make_client: Any, stream: bool) -> None:
    async with make_client(FakeEngine(context=32)) as (http, _):
        body = dict(BODY, messages=[{"role": "user", "content": "w " * 100}], stream=stream)
        r = await http.post("/v1/chat/completions", json=body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded"
    assert err["message"].startswith("This model's maximum context length is 32 tokens; the request has ")
    assert "tokens" in err["message"]


# -- aliases


async def test_an_alias_reaches_the_served_model(make_client: Any) -> None:
    aliases = ["claude-*=fake-model", "gpt-4o=fake-model"]
    async with make_client(model_alias=aliases) as (http, engine):
        for stream in (False, True):
            result = await chat_http(http, dict(BODY, model="claude-sonnet-4-5"), stream)
            assert result.content == engine.reply
        r = await http.post("/v1/chat/completions", json=dict(BODY, model="claude-sonnet-4-5"))
        assert r.json()["model"] == "fake-model"  # the concrete id answers
        r = await http.post("/v1/completions", json={"model": "gpt-4o", "prompt": "x"})
        assert r.status_code == 200, r.text
        assert (await http.get("/v1/models/claude-opus-4")).json()["id"] == "fake-model"
        ids = [m["id"] for m in (await http.get("/v1/models")).json()["data"]]
        assert ids == ["fake-model"]  # concrete ids only
        r = await http.post("/v1/chat/completions", json=dict(BODY, model="gpt-5"))
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "model_not_found"


def test_an_alias_to_an_adapter_id_follows_the_adapter() -> None:
    from hermesd.server.errors import APIError
    from hermesd.server.model_registry import ModelRegistry

    class Adapters:  # the registry reads only membership and the list
        def __init__(self) -> None:
            self.names: set[str] = set()

        def __contains__(self, name: object) -> bool:
            return name in self.names

        def all(self) -> list[Any]:
            return []

    adapters = Adapters()
    registry = ModelRegistry(["base"], adapters, aliases=[("tuned", "base:mine")])  # type: ignore[arg-type]
    with pytest.raises(APIError):
        registry.resolve("tuned")  # not loaded yet
    adapters.names.add("mine")
    resolved = registry.resolve("tuned")
    assert (resolved.id, resolved.base_id, resolved.adapter) == ("base:mine", "base", "mine")
    assert registry.resolve("base").adapter is None  # a concrete id is never an alias


async def test_an_alias_to_a_model_not_served_fails_the_load(make_client: Any) -> None:
    async with make_client(model_alias=["claude-*=hermes-4-405b"]) as (http, _):
        r = await http.get("/health")
        assert r.status_code == 503
        assert "hermes-4-405b" in r.json()["error"]


def test_a_malformed_alias_is_a_settings_error() -> None:
    from hermesd.server.settings import Settings

    with pytest.raises(ValueError, match="PATTERN=ID"):
        Settings(model_alias=["claude-*"])
    assert Settings(model_alias="a=b, c*=d").model_aliases() == [("a", "b"), ("c*", "d")]


# -- reasoning field and effort

THINKING = "<think>Let me see.</think>The answer."


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("setting", "keys"),
    [
        ("reasoning_content", {"reasoning_content"}),
        ("reasoning", {"reasoning"}),
        ("both", {"reasoning_content", "reasoning"}),
    ],
)
async def test_reasoning_field(make_client: Any, stream: bool, setting: str, keys: set[str]) -> None:
    async with make_client(FakeEngine(reply=THINKING), reasoning_field=setting) as (http, _):
        r = await http.post("/v1/chat/completions", json=dict(BODY, think=True, stream=stream))
    assert r.status_code == 200, r.text
    got: dict[str, str] = {}
    if stream:
        for ev in parse_sse(r.text)[:-1]:
            for choice in ev["choices"]:
                for k, v in choice["delta"].items():
                    if k in ("reasoning", "reasoning_content", "content") and v:
                        got[k] = got.get(k, "") + v
    else:
        msg = r.json()["choices"][0]["message"]
        got = {k: msg[k] for k in ("reasoning", "reasoning_content", "content") if msg.get(k)}
    assert got == {"content": "The answer.", **dict.fromkeys(keys, "Let me see.")}


@pytest.mark.parametrize("level", list(REASONING_EFFORTS))
async def test_every_effort_level_maps_to_its_budget(client: Any, level: str) -> None:
    http, engine = client
    r = await http.post("/v1/chat/completions", json=dict(BODY, reasoning_effort=level))
    assert r.status_code == 200, r.text
    on, budget = REASONING_EFFORTS[level]
    reasoning = engine.requests[-1].reasoning
    assert reasoning.thinking is on
    if on:
        assert reasoning.budget == budget


async def test_effort_levels_are_ordered_and_max_is_unbounded() -> None:
    budgets = [REASONING_EFFORTS[k][1] for k in ("minimal", "low", "medium", "high", "xhigh")]
    assert budgets == sorted(budgets)
    assert REASONING_EFFORTS["max"] == (True, None)


async def test_a_number_beats_an_effort_level_and_a_level_beats_the_server_default(make_client: Any) -> None:
    async with make_client(reasoning_budget=100) as (http, engine):
        body = dict(BODY, reasoning_effort="high", max_reasoning_tokens=300)
        assert (await http.post("/v1/chat/completions", json=body)).status_code == 200
        assert engine.requests[-1].reasoning.budget == 300
        body = dict(BODY, reasoning_effort="low")
        assert (await http.post("/v1/chat/completions", json=body)).status_code == 200
        assert engine.requests[-1].reasoning.budget == REASONING_EFFORTS["low"][1]
        assert (await http.post("/v1/chat/completions", json=dict(BODY, think=True))).status_code == 200
        assert engine.requests[-1].reasoning.budget == 100


async def test_openrouter_and_ollama_levels_use_the_same_table(client: Any) -> None:
    http, engine = client
    body = dict(BODY, reasoning={"effort": "xhigh"})
    assert (await http.post("/v1/chat/completions", json=body)).status_code == 200
    assert engine.requests[-1].reasoning.budget == REASONING_EFFORTS["xhigh"][1]
    assert (await http.post("/v1/chat/completions", json=dict(BODY, think="medium"))).status_code == 200
    assert engine.requests[-1].reasoning.budget == REASONING_EFFORTS["medium"][1]
    r = await http.post("/v1/chat/completions", json=dict(BODY, reasoning={"effort": "extreme"}))
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "reasoning.effort"
