"""What kind of OpenAI-compatible server an upstream is, and how each kind spells what hermesd asks.

Pure functions over the JSON the upstream answered at start-up, so they are tested by tables. The
remote engine (runtime/engine/upstream.py) detects the kind once and then builds every request body
through it: sampling fields, grammars (llama-server and hermesd take GBNF as `grammar`, with lazy
triggers; vLLM takes it under `structured_outputs` or, before 0.10.2, as `guided_grammar`; SGLang as
`ebnf`), the body of /tokenize, and whether adapters can be loaded at run time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from hermesd.runtime.engine.protocol import GenerationRequest, SamplingParams
from hermesd.runtime.errors import UpstreamError

Kind = Literal["hermesd", "llama-server", "vllm", "sglang", "openai"]

# llama.cpp's common_grammar_trigger_type: a literal word, and a regex the whole output must match
# (its first group marks where the grammar starts)
TRIGGER_WORD = 1
TRIGGER_PATTERN_FULL = 3


class UpstreamUnsupported(UpstreamError):
    """The request asks for something this kind of upstream cannot do (a 400, before generating)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 400, type="invalid_request_error", code="unsupported_by_upstream")


@dataclass(frozen=True)
class Dialect:
    kind: Kind
    version: str = ""

    @property
    def loads_adapters(self) -> bool:
        """vLLM's runtime LoRA API (POST /v1/load_lora_adapter, with VLLM_ALLOW_RUNTIME_LORA_UPDATING)."""
        return self.kind == "vllm"

    @property
    def stops_here(self) -> bool:
        """hermesd applies the stop strings itself (as its own engine does) instead of sending them:
        llama-server's usage counts the end-of-generation token, hermesd's does not, and only a
        stop that llama-server never saw tells the two endings apart."""
        return self.kind == "llama-server"

    @property
    def has_tokenize(self) -> bool:
        return self.kind in ("llama-server", "vllm")

    def sampling_fields(self, s: SamplingParams) -> dict[str, Any]:
        out: dict[str, Any] = {
            "temperature": s.temperature,
            "top_p": s.top_p,
            "presence_penalty": s.presence_penalty,
            "frequency_penalty": s.frequency_penalty,
        }
        if s.seed is not None:
            out["seed"] = s.seed
        if self.kind in ("hermesd", "llama-server"):
            out.update(top_k=s.top_k, min_p=s.min_p, repeat_penalty=s.repeat_penalty)
            if self.kind == "llama-server":
                out["repeat_last_n"] = s.penalty_last_n
        elif self.kind in ("vllm", "sglang"):
            out.update(top_k=s.top_k, min_p=s.min_p, repetition_penalty=s.repeat_penalty)
        return out

    def grammar_fields(self, req: GenerationRequest) -> dict[str, Any]:
        """The body fields that constrain the output with `req.grammar` (GBNF), lazily from
        `req.grammar_trigger` on when it is set. UpstreamUnsupported where this upstream cannot."""
        grammar, trigger = req.grammar, req.grammar_trigger
        if grammar is None:
            return {}
        if self.kind == "hermesd":
            out: dict[str, Any] = {"grammar": grammar}
            if trigger:
                out.update(grammar_lazy=True, grammar_triggers=[{"type": TRIGGER_WORD, "value": trigger}])
            return out
        if self.kind == "llama-server":
            out = {"grammar": grammar}
            if trigger:
                # the very pattern hermesd's own engine triggers with (runtime/engine/sampling.py)
                pattern = r"[\s\S]*?(" + re.escape(trigger) + r")[\s\S]*"
                out.update(
                    grammar_lazy=True,
                    grammar_triggers=[{"type": TRIGGER_PATTERN_FULL, "value": pattern}],
                )
            return out
        if trigger:
            raise UpstreamUnsupported(
                f"the upstream ({self.kind}) cannot start a grammar after the reasoning: turn thinking "
                "off for a request with tool_choice 'required'/a function or a response_format"
            )
        if self.kind == "vllm":
            if _version_before(self.version, (0, 10, 2)):
                return {"guided_grammar": grammar}
            return {"structured_outputs": {"grammar": grammar}}
        if self.kind == "sglang":
            return {"ebnf": grammar}
        raise UpstreamUnsupported(
            "the upstream is not known to take grammars: tool_choice 'required'/a function and "
            "response_format cannot be enforced there"
        )

    def continuation_fields(self, req: GenerationRequest) -> dict[str, Any]:
        """The grammar fields for a continuation whose prompt already ends with the reasoning's close
        tag (a reasoning budget ran out): the lazy grammar of `after_reasoning` minus its close tag,
        applied from the start."""
        grammar, trigger = req.grammar, req.grammar_trigger
        if grammar is None or not trigger:
            return self.grammar_fields(req)
        head = f'root ::= "{trigger}" [ \\n]* a-root\n'
        if not grammar.startswith(head):
            raise UpstreamUnsupported("the upstream cannot continue this grammar after a reasoning budget")
        rest = "root ::= [ \\n]* a-root\n" + grammar[len(head) :]
        return self.grammar_fields(replace(req, grammar=rest, grammar_trigger=None))

    def tokenize_body(self, model: str, text: str) -> dict[str, Any]:
        if self.kind == "vllm":
            return {"model": model, "prompt": text, "add_special_tokens": True}
        return {"content": text, "add_special": True, "parse_special": True}


def _version_before(version: str, than: tuple[int, ...]) -> bool:
    parts = re.findall(r"\d+", version)[: len(than)]
    if not parts:
        return False  # unknown: assume a current vLLM
    return tuple(int(p) for p in parts) < than


def detect_kind(
    models: Mapping[str, Any] | None, props: Mapping[str, Any] | None, version: Mapping[str, Any] | None
) -> Kind:
    """The kind of upstream from its /v1/models (`owned_by`), /props and /version answers (None: the
    endpoint did not answer 200 with a JSON object)."""
    owner = ""
    data = (models or {}).get("data")
    if isinstance(data, list) and data and isinstance(data[0], Mapping):
        owner = str(data[0].get("owned_by") or "").lower()
    if owner == "hermesd":
        return "hermesd"
    if owner == "vllm":
        return "vllm"
    if owner == "sglang":
        return "sglang"
    if owner == "llamacpp" or (props is not None and "default_generation_settings" in props):
        return "llama-server"
    if version is not None and "version" in version:
        return "vllm"  # vLLM's /version is {"version": "0.x"}
    return "openai"


def first_model(models: Mapping[str, Any] | None) -> Mapping[str, Any]:
    data = (models or {}).get("data")
    if isinstance(data, list) and data and isinstance(data[0], Mapping):
        return data[0]
    return {}


def context_length(model: Mapping[str, Any], props: Mapping[str, Any] | None) -> int | None:
    """Tokens per sequence, where the upstream says: vLLM's `max_model_len`, hermesd's
    `context_length`, llama-server's /props `default_generation_settings.n_ctx` (per slot)."""
    for key in ("max_model_len", "context_length"):
        value = model.get(key)
        if isinstance(value, int) and value > 0:
            return value
    settings = (props or {}).get("default_generation_settings")
    if isinstance(settings, Mapping):
        n_ctx = settings.get("n_ctx")
        if isinstance(n_ctx, int) and n_ctx > 0:
            return n_ctx
    return None


def usage_numbers(usage: Mapping[str, Any]) -> tuple[int, int, int]:
    """(prompt, completion, cached) tokens of an OpenAI usage object; 0 where absent."""

    def num(value: Any) -> int:
        return value if isinstance(value, int) and value >= 0 else 0

    details = usage.get("prompt_tokens_details")
    cached = num(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
    return num(usage.get("prompt_tokens")), num(usage.get("completion_tokens")), cached
