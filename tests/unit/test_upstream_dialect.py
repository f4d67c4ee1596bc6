"""The upstream kinds and how each spells hermesd's requests (runtime/engine/upstream_dialect.py), and
how upstream HTTP errors become the errors hermesd's clients see: tables, no sockets."""

from __future__ import annotations

import re
from typing import Any

import pytest

from hermesd.models.formats.grammars import after_reasoning
from hermesd.runtime.engine.protocol import GenerationRequest, SamplingParams
from hermesd.runtime.engine.upstream import _status_error, base_url
from hermesd.runtime.engine.upstream_dialect import (
    Dialect,
    UpstreamUnsupported,
    context_length,
    detect_kind,
    usage_numbers,
)

GRAMMAR = 'root ::= "yes" | "no"'
CONTEXT_ERROR = b'{"error": {"message": "too long", "code": "context_length_exceeded", "param": "messages"}}'


def models(owner: str, **extra: Any) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": "m", "object": "model", "owned_by": owner, **extra}]}


@pytest.mark.parametrize(
    ("models_json", "props", "version", "kind"),
    [
        (models("hermesd"), {"default_generation_settings": {"n_ctx": 2048}}, None, "hermesd"),
        (models("llamacpp"), {"default_generation_settings": {"n_ctx": 2048}}, None, "llama-server"),
        (models("someone"), {"default_generation_settings": {}}, None, "llama-server"),
        (models("vllm", max_model_len=4096), None, {"version": "0.11.0"}, "vllm"),
        (models("sglang"), None, None, "sglang"),
        (models("openai"), None, {"version": "0.9.2"}, "vllm"),
        (models("openai"), None, None, "openai"),
        (None, None, None, "openai"),
    ],
)
def test_detect_kind(models_json: Any, props: Any, version: Any, kind: str) -> None:
    assert detect_kind(models_json, props, version) == kind


@pytest.mark.parametrize(
    ("model", "props", "ctx"),
    [
        ({"max_model_len": 131072}, None, 131072),
        ({"context_length": 2048}, {"default_generation_settings": {"n_ctx": 999}}, 2048),
        ({}, {"default_generation_settings": {"n_ctx": 4096}}, 4096),
        ({}, {}, None),
        ({"max_model_len": "big"}, None, None),
    ],
)
def test_context_length(model: dict[str, Any], props: Any, ctx: int | None) -> None:
    assert context_length(model, props) == ctx


def request(grammar: str | None = GRAMMAR, trigger: str | None = None) -> GenerationRequest:
    return GenerationRequest(prompt="p", max_tokens=8, grammar=grammar, grammar_trigger=trigger)


def test_grammar_fields_per_kind() -> None:
    assert Dialect("hermesd").grammar_fields(request()) == {"grammar": GRAMMAR}
    assert Dialect("llama-server").grammar_fields(request()) == {"grammar": GRAMMAR}
    assert Dialect("vllm", "0.11.0").grammar_fields(request()) == {"structured_outputs": {"grammar": GRAMMAR}}
    assert Dialect("vllm", "0.10.1").grammar_fields(request()) == {"guided_grammar": GRAMMAR}
    assert Dialect("sglang").grammar_fields(request()) == {"ebnf": GRAMMAR}
    for kind in ("hermesd", "llama-server", "vllm", "sglang", "openai"):
        assert Dialect(kind).grammar_fields(request(grammar=None)) == {}  # type: ignore[arg-type]
    with pytest.raises(UpstreamUnsupported):
        Dialect("openai").grammar_fields(request())


def test_lazy_grammar_starts_at_the_close_tag() -> None:
    hermesd = Dialect("hermesd").grammar_fields(request(trigger="</think>"))
    assert hermesd == {
        "grammar": GRAMMAR,
        "grammar_lazy": True,
        "grammar_triggers": [{"type": 1, "value": "</think>"}],
    }
    llama = Dialect("llama-server").grammar_fields(request(trigger="</think>"))
    assert llama["grammar_lazy"] is True
    (trigger,) = llama["grammar_triggers"]
    assert trigger["type"] == 3  # the whole output matches; the group is where the grammar starts
    match = re.fullmatch(trigger["value"], "<think>\nhm\n</think>\n{")
    assert match is not None and match.start(1) == len("<think>\nhm\n")
    assert re.fullmatch(trigger["value"], "<think>\nstill thinking") is None
    for kind in ("vllm", "sglang"):
        with pytest.raises(UpstreamUnsupported, match="thinking off"):
            Dialect(kind).grammar_fields(request(trigger="</think>"))  # type: ignore[arg-type]


def test_sampling_fields_use_each_kinds_names() -> None:
    s = SamplingParams(temperature=0.0, top_k=5, repeat_penalty=1.1, seed=7, penalty_last_n=32)
    llama = Dialect("llama-server").sampling_fields(s)
    assert llama["repeat_penalty"] == 1.1 and llama["repeat_last_n"] == 32 and llama["top_k"] == 5
    vllm = Dialect("vllm").sampling_fields(s)
    assert vllm["repetition_penalty"] == 1.1 and "repeat_penalty" not in vllm and vllm["seed"] == 7
    plain = Dialect("openai").sampling_fields(s)
    assert "top_k" not in plain and plain["temperature"] == 0.0
    assert "seed" not in Dialect("hermesd").sampling_fields(SamplingParams())


def test_tokenize_bodies() -> None:
    assert Dialect("vllm").tokenize_body("m", "hi") == {
        "model": "m",
        "prompt": "hi",
        "add_special_tokens": True,
    }
    assert Dialect("llama-server").tokenize_body("m", "hi")["content"] == "hi"
    assert Dialect("vllm").has_tokenize and not Dialect("hermesd").has_tokenize
    assert Dialect("vllm").loads_adapters and not Dialect("llama-server").loads_adapters
    assert Dialect("llama-server").stops_here and not Dialect("hermesd").stops_here


def test_usage_numbers() -> None:
    assert usage_numbers({"prompt_tokens": 9, "completion_tokens": 3}) == (9, 3, 0)
    assert usage_numbers({"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": 4}}) == (9, 0, 4)
    assert usage_numbers({"prompt_tokens": None, "completion_tokens": -1}) == (0, 0, 0)


@pytest.mark.parametrize(
    ("status", "body", "headers", "want_status", "want_code"),
    [
        (400, CONTEXT_ERROR, {}, 400, "context_length_exceeded"),
        (400, b'{"object": "error", "message": "bad", "type": "BadRequestError"}', {}, 400, None),
        (401, b'{"error": {"message": "invalid api key"}}', {}, 502, "upstream_auth"),
        (403, b"forbidden", {}, 502, "upstream_auth"),
        (404, b'{"detail": "Not Found"}', {}, 502, "upstream_error"),
        (429, b"slow down", {"retry-after": "7"}, 429, "rate_limit_exceeded"),
        (500, b"<html>boom</html>", {}, 502, "upstream_error"),
        (503, b'{"error": {"message": "Loading model"}}', {}, 503, "upstream_unavailable"),
        (504, b"", {}, 504, "upstream_timeout"),
    ],
)  # fmt: skip
def test_upstream_http_errors_map_to_client_errors(
    status: int, body: bytes, headers: dict[str, str], want_status: int, want_code: str | None
) -> None:
    err = _status_error("http://up:8000", status, body, headers)
    assert (err.status, err.code) == (want_status, want_code)
    if status == 400:
        assert err.type == "invalid_request_error" and str(err) in ("too long", "bad")
    if status == 429:
        assert err.retry_after == 7
    if status in (401, 403):
        assert "HERMESD_UPSTREAM_KEY" in str(err) and "invalid api key" not in str(err)
    if status == 503:
        assert "Loading model" in str(err) and err.retry_after == 1


def test_base_url_drops_v1() -> None:
    assert base_url("http://h:8000/v1/") == "http://h:8000"
    assert base_url("https://h/api") == "https://h/api"


def test_a_continuation_after_a_reasoning_budget_applies_the_grammar_from_the_start() -> None:
    lazy = after_reasoning(GRAMMAR, "</think>")
    fields = Dialect("llama-server").continuation_fields(request(grammar=lazy, trigger="</think>"))
    assert "grammar_lazy" not in fields
    grammar = fields["grammar"]
    assert grammar.startswith("root ::= [ \\n]* a-root\n") and "</think>" not in grammar
    assert grammar.split("\n", 1)[1] == lazy.split("\n", 1)[1]  # the answer's rules, unchanged
    with pytest.raises(UpstreamUnsupported):
        Dialect("hermesd").continuation_fields(request(grammar=GRAMMAR, trigger="</think>"))
    assert Dialect("vllm").continuation_fields(request()) == {"structured_outputs": {"grammar": GRAMMAR}}
