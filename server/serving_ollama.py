"""Ollama's API as a thin layer over chat completions.

An Ollama request becomes the `ChatCompletionRequest` chat completions would get (one renderer, one
reasoning parser, one tool-call parser, one grammar builder: server/serving_chat.py owns them all);
its stream of OpenAI chunks becomes Ollama's lines. A whole (`stream: false`) reply is those same
lines folded into one, so streamed and whole answers cannot differ.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from hermesd.models.gguf_info import file_type_name
from hermesd.runtime.engine.protocol import Engine, ModelInfo
from hermesd.server.errors import APIError, invalid
from hermesd.server.model_registry import ModelRegistry, ResolvedModel
from hermesd.server.protocol.ollama import (
    OllamaChatRequest,
    OllamaGenerateRequest,
    OllamaGenerationFields,
    OllamaMessage,
)
from hermesd.server.serving_chat import ChatServing, Loc, validated_chat_request
from hermesd.server.serving_common import DEFAULT_SAMPLING

log = logging.getLogger(__name__)

# Clients compare /api/version with the Ollama release they need (VS Code's Copilot, Open WebUI), so
# it names the Ollama API level these routes serve, not hermesd's own version.
OLLAMA_API_VERSION = "0.12.0"
CAPABILITIES = ["completion", "tools", "thinking"]
# `options` that carry over unchanged to the chat request (where their ranges are checked)
SAME_OPTIONS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
)
# chat request field -> the Ollama field it came from, for error messages
OLLAMA_NAMES = {name: f"options.{name}" for name in SAME_OPTIONS} | {
    "max_tokens": "options.num_predict",
    "response_format": "format",
}
NEVER_EXPIRES = "2318-01-01T00:00:00Z"  # the model stays loaded as long as hermesd runs


def ollama_version() -> dict[str, str]:
    try:
        ours = version("hermesd")
    except PackageNotFoundError:
        ours = "unknown"
    return {"version": OLLAMA_API_VERSION, "hermesd": ours}


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _done_reason(finish_reason: str) -> str:
    return "stop" if finish_reason == "tool_calls" else finish_reason


def _arguments(text: str) -> dict[str, Any]:
    """Ollama sends tool-call arguments as an object; the parser hands over JSON text."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError:
        log.warning("tool call arguments are not JSON: %.200s", text)
        return {}
    return value if isinstance(value, dict) else {"value": value}


@dataclass
class Turn:
    """One assistant turn as Ollama describes it, grown from the chunks of a chat stream."""

    started: int = field(default_factory=time.monotonic_ns)
    first: int | None = None
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str = "stop"
    usage: dict[str, Any] = field(default_factory=dict)

    def read(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """The Ollama message fragments (`thinking`, `content`, `tool_calls`) in one OpenAI chunk."""
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        out: list[dict[str, Any]] = []
        for choice in chunk.get("choices", ()):
            delta = choice.get("delta", {})
            # the reasoning key follows --reasoning-field; with `both` the two carry the same text
            thinking = delta.get("reasoning_content") or delta.get("reasoning")
            if thinking:
                out.append({"thinking": thinking})
            if delta.get("content"):
                out.append({"content": delta["content"]})
            for call in delta.get("tool_calls") or ():
                got = self.calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                got["id"] = call.get("id") or got["id"]
                fn = call.get("function", {})
                got["name"] = fn.get("name") or got["name"]
                got["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                if self.calls:  # Ollama sends each call whole, in one line before the last
                    out.append({"tool_calls": self.tool_calls()})
        if out and self.first is None:
            self.first = time.monotonic_ns()
        return out

    def tool_calls(self) -> list[dict[str, Any]]:
        return [
            {
                "id": c["id"],
                "function": {"index": i, "name": c["name"], "arguments": _arguments(c["arguments"])},
            }
            for i, c in sorted(self.calls.items())
        ]

    def summary(self) -> dict[str, Any]:
        """The fields of Ollama's last line: why it ended, token counts, durations in nanoseconds."""
        end = time.monotonic_ns()
        first = self.first or end
        return {
            "done": True,
            "done_reason": _done_reason(self.finish_reason),
            "total_duration": end - self.started,
            "load_duration": 0,
            "prompt_eval_count": self.usage.get("prompt_tokens", 0),
            "prompt_eval_duration": first - self.started,
            "eval_count": self.usage.get("completion_tokens", 0),
            "eval_duration": end - first,
        }


def fold(lines: Iterable[dict[str, Any]], text_key: str) -> dict[str, Any]:
    """The whole reply: the streamed lines joined (`text_key`: `message` for chat, `response`)."""
    texts: dict[str, list[str]] = {"content": [], "thinking": []}
    calls: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    for line in lines:
        part = line.get("message", line)
        for key, pieces in texts.items():
            name = "response" if key == "content" and text_key == "response" else key
            if part.get(name):
                pieces.append(part[name])
        calls += part.get("tool_calls") or []
        last = line
    content, thinking = "".join(texts["content"]), "".join(texts["thinking"])
    if text_key == "message":
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        if calls:
            message["tool_calls"] = calls
        return last | {"message": message}
    return last | {"response": content} | ({"thinking": thinking} if thinking else {})


class OllamaServing:
    def __init__(self, chat: ChatServing, registry: ModelRegistry, engine: Engine) -> None:
        self.chat = chat
        self.registry = registry
        self.engine = engine

    # -- model names
    def resolve(self, name: str) -> ResolvedModel:
        """A model name as Ollama clients send it: `:latest` is the model itself."""
        try:
            return self.registry.resolve(name)
        except APIError:
            if not name.endswith(":latest"):
                raise
            return self.registry.resolve(name.removesuffix(":latest"))

    def ollama_names(self) -> list[str]:
        """The concrete ids, each with a tag as Ollama names models (`<base>:latest`, `<base>:<adapter>`)."""
        return [str(m["id"]) if ":" in str(m["id"]) else f"{m['id']}:latest" for m in self.registry.listing()]

    # -- generation
    async def chat_lines(self, req: OllamaChatRequest) -> AsyncIterator[dict[str, Any]]:
        model = self.resolve(req.model)
        if not req.messages:  # Ollama's way to load a model: nothing to say
            return _one(_loaded(req))
        body = self._body(req, model) | {
            "messages": [_openai_message(m, f"messages[{i}]") for i, m in enumerate(req.messages)],
            "tools": req.tools,
        }
        return self._lines(req.model, await self._chunks(body), "message")

    async def generate_lines(self, req: OllamaGenerateRequest) -> AsyncIterator[dict[str, Any]]:
        model = self.resolve(req.model)
        for name in ("suffix", "template", "images", "context"):
            if getattr(req, name):
                raise invalid(f"{name} is not supported here", param=name, code="unsupported_parameter")
        if req.raw:
            raise invalid("raw prompts are not supported; use /v1/completions", param="raw")
        if not req.prompt:
            return _one(_loaded(req) | {"response": ""})
        system = [{"role": "system", "content": req.system}] if req.system else []
        body = self._body(req, model) | {"messages": [*system, {"role": "user", "content": req.prompt}]}
        return self._lines(req.model, await self._chunks(body), "response")

    def _body(self, req: OllamaGenerationFields, model: ResolvedModel) -> dict[str, Any]:
        if req.logprobs:
            raise invalid("logprobs are not supported", param="logprobs", code="unsupported_parameter")
        body: dict[str, Any] = {"model": model.id, "stream": True, "stream_options": {"include_usage": True}}
        if req.think is not None:
            body["think"] = req.think
        if req.format == "json":
            body["response_format"] = {"type": "json_object"}
        elif isinstance(req.format, dict):
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "format", "schema": req.format},
            }
        opts = req.options
        if opts is not None:
            body |= {k: getattr(opts, k) for k in SAME_OPTIONS if getattr(opts, k) is not None}
            if opts.num_predict is not None and opts.num_predict not in (-1, -2):
                body["max_tokens"] = opts.num_predict
            served = self.engine.info.context_length
            if opts.num_ctx is not None and opts.num_ctx > served:
                raise invalid(
                    f"options.num_ctx: at most {served}, the context this server allocated per sequence",
                    param="options.num_ctx",
                )
        return body

    async def _chunks(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return await self.chat.create_stream(validated_chat_request(body, _in_ollama_names))

    async def _lines(
        self, name: str, chunks: AsyncIterator[dict[str, Any]], text_key: str
    ) -> AsyncIterator[dict[str, Any]]:
        turn = Turn()
        try:
            async for chunk in chunks:
                for part in turn.read(chunk):
                    yield _line(name, text_key, part, done=False)
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        yield _line(name, text_key, {}, done=True) | turn.summary()

    # -- model facts
    def tags(self) -> dict[str, Any]:
        info = self.engine.info
        return {"models": [self._entry(name, info) for name in self.ollama_names()]}

    def ps(self) -> dict[str, Any]:
        info = self.engine.info
        gpu = sum(d.model_bytes + d.kv_bytes + d.compute_bytes for d in info.devices if d.kind == "gpu")
        total = sum(d.model_bytes + d.kv_bytes + d.compute_bytes for d in info.devices)
        models = []
        for name in self.ollama_names():
            entry = self._entry(name, info)
            models.append(
                entry
                | {
                    "size": total or entry["size"],
                    "size_vram": gpu,
                    "expires_at": NEVER_EXPIRES,
                    "context_length": info.context_length,
                }
            )
        return {"models": models}

    def show(self, name: str | None) -> dict[str, Any]:
        if not name:
            raise invalid("model is required", param="model")
        self.resolve(name)
        info = self.engine.info
        model_info: dict[str, Any] = {
            k: _number(v) for k, v in info.metadata.items() if not k.startswith("tokenizer.")
        }
        model_info |= {
            "general.architecture": info.architecture,
            f"{info.architecture}.context_length": info.train_context_length,
        }
        if info.n_params:
            model_info["general.parameter_count"] = info.n_params
        d = DEFAULT_SAMPLING
        params = {
            "num_ctx": info.context_length,
            "temperature": d.temperature,
            "top_k": d.top_k,
            "top_p": d.top_p,
            "stop": json.dumps(info.eos_token),
        }
        return {
            "license": "",
            "modelfile": f"# served by hermesd\nFROM {info.path}\n",
            "parameters": "\n".join(f"{k:<30} {v}" for k, v in params.items()),
            "template": info.chat_template or "",
            "details": _details(info),
            "model_info": model_info,
            "capabilities": CAPABILITIES,
            "modified_at": _modified_at(info),
        }

    def _entry(self, name: str, info: ModelInfo) -> dict[str, Any]:
        size = _file_size(info)
        return {
            "name": name,
            "model": name,
            "modified_at": _modified_at(info),
            "size": size,
            "digest": hashlib.sha256(f"{info.path}:{size}".encode()).hexdigest(),
            "details": _details(info),
        }


def _openai_message(m: OllamaMessage, where: str) -> dict[str, Any]:
    if m.images:
        raise invalid(f"{where}.images: this model reads text only", param=f"{where}.images")
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.thinking:
        out["reasoning_content"] = m.thinking
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id or "", "type": "function", "function": c.function.model_dump()} for c in m.tool_calls
        ]
    if m.tool_name:
        out["name"] = m.tool_name
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


def _in_ollama_names(loc: Loc) -> Loc:
    if loc and loc[0] in OLLAMA_NAMES:
        return (*OLLAMA_NAMES[str(loc[0])].split("."), *loc[1:])
    return loc


def _line(name: str, text_key: str, part: dict[str, Any], *, done: bool) -> dict[str, Any]:
    line: dict[str, Any] = {"model": name, "created_at": now_rfc3339()}
    if text_key == "message":
        line["message"] = {"role": "assistant", "content": ""} | part
    else:
        line["response"] = part.get("content", "")
        if "thinking" in part:
            line["thinking"] = part["thinking"]
    return line | {"done": done}


def _loaded(req: OllamaGenerationFields) -> dict[str, Any]:
    unload = req.keep_alive in (0, "0", "0s")
    return {
        "model": req.model,
        "created_at": now_rfc3339(),
        "done": True,
        "done_reason": "unload" if unload else "load",
    }


async def _one(line: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    yield line


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _details(info: ModelInfo) -> dict[str, Any]:
    meta = info.metadata
    ftype = meta.get("general.file_type", "")
    return {
        "parent_model": "",
        "format": "gguf",
        "family": info.architecture,
        "families": [info.architecture],
        "parameter_size": meta.get("general.size_label") or _parameter_size(info.n_params),
        "quantization_level": (file_type_name(int(ftype)) if ftype.isdigit() else None) or "",
    }


def _parameter_size(n_params: int) -> str:
    """As Ollama writes it: `14.8B`, `50.3M`; empty when unknown."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n_params >= scale:
            return f"{n_params / scale:.1f}{unit}"
    return str(n_params) if n_params else ""


def _file_size(info: ModelInfo) -> int:
    try:
        return os.path.getsize(info.path)
    except OSError:
        return info.size_bytes


def _modified_at(info: ModelInfo) -> str:
    try:
        stamp = os.path.getmtime(info.path)
    except OSError:
        return now_rfc3339()
    return datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")
