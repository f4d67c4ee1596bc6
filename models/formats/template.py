"""Render a chat template found inside a GGUF file. The template is UNTRUSTED input.

It runs in Jinja's `ImmutableSandboxedEnvironment` (CVE-2024-34359 was an unsandboxed render of exactly
this metadata field), set up as transformers does (trim_blocks, lstrip_blocks, loop controls, the
``{% generation %}`` tag, ``tojson``, ``raise_exception``, ``strftime_now``) so that templates written
for Hugging Face render the same here. On top of the sandbox:
- touching an unsafe attribute (``__class__``, ``__globals__``...) fails at once, instead of the
  sandbox's default of rendering an empty string until the value is used;
- ``*`` and ``**`` are checked so ``'a' * 10**10`` cannot allocate gigabytes, and the output is capped.
Not covered: a template that loops for a long time without output (nested ``range`` loops); the server
renders off the event loop, so this costs one worker thread, not the process.

Every failure (syntax error, sandbox violation, ``raise_exception`` from the template, any Python error
while rendering) becomes a `PromptError`.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.parser import Parser
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from hermesd.models.chat import ChatOptions, Message
from hermesd.models.formats.errors import PromptError
from hermesd.models.formats.prompt import RenderedPrompt, message_dicts, validate_messages, validate_tools
from hermesd.models.formats.reasoning import THINK_TAGS

# A 512K-token context is about 2M characters; leave room above that.
MAX_OUTPUT_CHARS = 8_000_000
_MAX_POWER_EXPONENT = 1024


class _TemplateRaised(Exception):
    """The template called raise_exception(): its own message is the useful one."""


class _GenerationTag(Extension):
    """``{% generation %}...{% endgeneration %}`` marks trainable text for transformers; here it renders."""

    tags = {"generation"}  # noqa: RUF012 (the base class declares it this way)

    def parse(self, parser: Parser) -> list[nodes.Node]:
        next(parser.stream)
        return list(parser.parse_statements(("name:endgeneration",), drop_needle=True))


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> NoReturn:
        raise SecurityError(
            f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is not allowed"
        )

    def call_binop(self, context: Context, op: str, left: Any, right: Any) -> Any:
        if op == "*":
            for seq, times in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
                if sized and len(seq) * times > MAX_OUTPUT_CHARS:
                    raise SecurityError("a repetition in the template would exceed the output limit")
            return operator.mul(left, right)
        if op == "**":
            if isinstance(right, int | float) and abs(right) > _MAX_POWER_EXPONENT:
                raise SecurityError("an exponent in the template is too large")
            return operator.pow(left, right)
        return super().call_binop(context, op, left, right)


def _raise_exception(message: str) -> NoReturn:
    raise _TemplateRaised(str(message))


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # transformers' version: no HTML escaping (Jinja's own tojson escapes <, >, & and ').
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _environment() -> _Sandbox:
    env = _Sandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, "jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_ENV = _environment()


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    try:
        return _ENV.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise PromptError(
            f"the model's chat template has a syntax error (line {exc.lineno}): {exc.message}"
        ) from exc
    except Exception as exc:
        raise PromptError(f"the model's chat template cannot be compiled: {exc}") from exc


def render_gguf_template(
    template: str,
    messages: Sequence[Message],
    options: ChatOptions,
    *,
    bos_token: str,
    eos_token: str,
) -> RenderedPrompt:
    """Render `messages` through a GGUF's ``tokenizer.chat_template``."""
    validate_messages(messages)
    tools = validate_tools(options.tools)
    compiled = _compile(template)
    context: dict[str, Any] = {
        "messages": message_dicts(messages),
        "tools": [dict(t) for t in tools] or None,
        "add_generation_prompt": options.add_generation_prompt,
        "bos_token": bos_token,
        "eos_token": eos_token,
        "thinking": options.thinking,
        "enable_thinking": options.thinking,
        "keep_cots": options.keep_cots,
    }
    try:
        text = _render_capped(compiled, context)
    except PromptError:
        raise
    except _TemplateRaised as exc:
        raise PromptError(f"the model's chat template rejected this chat: {exc}", "messages") from exc
    except SecurityError as exc:
        raise PromptError(f"the model's chat template broke the sandbox rules: {exc}") from exc
    except Exception as exc:  # anything a hostile or buggy template can provoke
        raise PromptError(f"the model's chat template failed: {type(exc).__name__}: {exc}") from exc
    # A GGUF's own template: assume the common tags (there is no metadata that names them).
    return RenderedPrompt(text=text, opened_think=text.rstrip().endswith(THINK_TAGS.open), tags=THINK_TAGS)


def _render_capped(compiled: jinja2.Template, context: dict[str, Any]) -> str:
    parts: list[str] = []
    size = 0
    for chunk in compiled.generate(context):
        size += len(chunk)
        if size > MAX_OUTPUT_CHARS:
            raise PromptError(f"the model's chat template produced more than {MAX_OUTPUT_CHARS} characters")
        parts.append(chunk)
    return "".join(parts)
