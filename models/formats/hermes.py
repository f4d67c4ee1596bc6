"""Hermes 4 prompt renderers: ChatML (14B), Llama-3 headers (70B/405B) and Seed (4.3-36B).

Verified against public text (see /work/shared/reference/hermes4.md, section 3, and the tests):
- The 14B system-prompt choice, from a llama-server dump of the 14B GGUF template: the caller's system
  message when there is one, else the deep-thinking prompt when ``thinking`` is on, else
  ``You are Hermes, created by Nous Research.``. The tests render that template fragment with Jinja and
  compare bytes.
- The 70B rewrite of earlier assistant turns with thinking on and ``keep_cots`` off:
  ``'<think> </think>' + content.split('</think>', 1)[1]``, compared in the tests with that fragment.
- A HF-tokenizer assertion of the full 14B prompt for one user message with thinking off.
- The opening of the 70B/405B template's two branches, from a diagnosis that quotes it: the tools
  branch opens the system turn with ``bos_token + '<|start_header_id|>system<|end_header_id|>\\n'`` (one
  newline), the plain branch with the same header and two newlines. The tests render both with Jinja.

Assumed (the official templates were not found in full; each choice is the one that matches the
evidence or the base model's own convention):
- Llama-3 turns are ``<|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>`` after the BOS, the
  system turn included (but see the tools branch above).
- Seed (4.3-36B) uses the same headers after the Seed BOS (``<seed:bos>`` unless told otherwise), with
  two newlines in both branches: its official template was not seen, and it is another model's.
- The tools block is the one the community 4.3-36B template uses (``# Tools`` ... ``<tools>``, one JSON
  definition per line in OpenAI's ``{"type": "function", "function": {...}}`` shape, then the
  ``<tool_call>`` instructions), appended to the system text after a blank line.
- Assistant tool calls are written as Qwen 3 does: content, then for each call a newline (unless it
  is the first call and there is no content) and
  ``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>``.
- Tool results: consecutive ``tool`` messages become one ``user`` turn holding one
  ``<tool_response>\\n...\\n</tool_response>`` block each, separated by newlines (Qwen 3's grouping and
  the Hermes 2 Pro/3 user-side convention).

Our documented extension: the official 14B template silently ignores ``thinking`` when the caller sends
a system message. We want the reasoning prompt to reach the model anyway, so with thinking on the
system text is the deep-thinking prompt, a blank line, then the caller's system text (the model card
allows "additional system instructions before or after this system message"). When the caller's text
already contains the deep-thinking prompt it is used as is, so it never appears twice.

"Prior" assistant turns (those rewritten unless keep_cots) are all assistant messages except a final
one when ``add_generation_prompt`` is off: that turn is the one being written (training data), and
its reasoning is kept. An assistant message whose turn has no ``</think>`` is left unchanged (the
guard LM Studio users had to add to the 70B template), and a separate ``reasoning_content`` is put
back inline as ``<think>\\n{reasoning}\\n</think>\\n`` before the content, the shape the model writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hermesd.models.chat import ChatOptions, Message
from hermesd.models.formats.errors import PromptError
from hermesd.models.formats.prompt import RenderedPrompt, arguments_object, validate_messages, validate_tools
from hermesd.models.formats.reasoning import THINK_TAGS

THINKING_PROMPT = (
    "You are a deep thinking AI, you may use extremely long chains of thought to deeply consider the "
    "problem and deliberate with yourself via systematic reasoning processes to help come to a correct "
    "solution prior to answering. You should enclose your thoughts and internal monologue inside "
    "<think> </think> tags, and then provide your solution or response to the problem."
)
STANDARD_PROMPT = "You are Hermes, created by Nous Research."

TOOLS_HEADER = (
    "# Tools\n\n"
    "You are a function calling AI model. "
    "You may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n\n"
    "<tools>\n"
)
TOOLS_FOOTER = (
    "\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n\n"
    "<tool_call>\n"
    '{"name": "<function-name>", "arguments": <args-json-object>}\n'
    "</tool_call>"
)

LLAMA3_BOS = "<|begin_of_text|>"
SEED_BOS = "<seed:bos>"

Style = Literal["chatml", "llama3", "seed"]


@dataclass(frozen=True)
class _Turns:
    """How one family of models marks the start and end of a turn."""

    header: str  # format string with {role}
    end: str
    # The system turn's opening when the prompt lists tools, where the official template differs.
    tools_system: str | None = None

    def open(self, role: str) -> str:
        return self.header.format(role=role)

    def open_system(self, *, tools: bool) -> str:
        if tools and self.tools_system is not None:
            return self.tools_system
        return self.open("system")


_CHATML = _Turns(header="<|im_start|>{role}\n", end="<|im_end|>\n")
_LLAMA3 = _Turns(
    header="<|start_header_id|>{role}<|end_header_id|>\n\n",
    end="<|eot_id|>",
    tools_system="<|start_header_id|>system<|end_header_id|>\n",
)
_SEED = _Turns(header=_LLAMA3.header, end=_LLAMA3.end)


def render_hermes(
    messages: Sequence[Message],
    options: ChatOptions,
    style: Style,
    bos_token: str | None = None,
) -> RenderedPrompt:
    """Render a chat the way Hermes 4 was trained to read it (see the module docstring for the rules)."""
    validate_messages(messages)
    tools = validate_tools(options.tools)
    if style == "chatml":
        turns, bos = _CHATML, ""  # Qwen 3 adds no BOS
    elif style == "llama3":
        turns, bos = _LLAMA3, bos_token or LLAMA3_BOS
    elif style == "seed":
        turns, bos = _SEED, bos_token or SEED_BOS
    else:
        raise ValueError(f"unknown Hermes prompt style {style!r}")

    caller_system = messages[0].content if messages[0].role == "system" else None
    system = _hermes_system_text(caller_system, options.thinking)
    if tools:
        system = f"{system}\n\n{tools_block(tools)}"
    rest_start = 1 if caller_system is not None else 0
    text = bos + turns.open_system(tools=bool(tools)) + system + turns.end
    text += _render_turns(messages, rest_start, options, turns, rewrite_cots=options.thinking)
    return RenderedPrompt(text=text, opened_think=False, tags=THINK_TAGS)


def render_chatml(messages: Sequence[Message], options: ChatOptions) -> RenderedPrompt:
    """Plain ChatML for models with no template of their own: no default system prompt, no thinking switch.

    Tools, tool calls and tool results use the same Hermes/Qwen conventions as `render_hermes`.
    """
    validate_messages(messages)
    tools = validate_tools(options.tools)
    caller_system = messages[0].content if messages[0].role == "system" else None
    parts = [p for p in (caller_system, tools_block(tools) if tools else None) if p]
    text = _CHATML.open("system") + "\n\n".join(parts) + _CHATML.end if parts else ""
    rest_start = 1 if caller_system is not None else 0
    text += _render_turns(messages, rest_start, options, _CHATML, rewrite_cots=False)
    return RenderedPrompt(text=text, opened_think=False, tags=THINK_TAGS)


def tools_block(tools: Sequence[dict[str, Any]]) -> str:
    """The system-prompt section that lists the callable functions, one JSON object per line."""
    lines = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    return TOOLS_HEADER + lines + TOOLS_FOOTER


def strip_prior_cot(content: str) -> str:
    """The 70B template's rewrite of an earlier assistant turn, guarded for turns with no ``</think>``."""
    tags = THINK_TAGS
    if tags.close not in content:
        return content
    return f"{tags.open} {tags.close}" + content.split(tags.close, 1)[1]


def _hermes_system_text(caller_system: str | None, thinking: bool) -> str:
    if not thinking:
        return STANDARD_PROMPT if caller_system is None else caller_system
    if caller_system is None or not caller_system.strip():
        return THINKING_PROMPT
    if THINKING_PROMPT in caller_system:
        return caller_system
    return f"{THINKING_PROMPT}\n\n{caller_system}"


def _render_turns(
    messages: Sequence[Message], start: int, options: ChatOptions, turns: _Turns, *, rewrite_cots: bool
) -> str:
    last = len(messages) - 1
    if options.add_generation_prompt and messages[last].role == "assistant":
        raise PromptError(
            f"messages[{last}] is an assistant message; the chat must end with a user, tool or system "
            "message to ask for a reply",
            f"messages[{last}].role",
        )
    out: list[str] = []
    for i in range(start, len(messages)):
        message = messages[i]
        if message.role == "tool":
            after_tool = i > start and messages[i - 1].role == "tool"
            out.append("\n" if after_tool else turns.open("user"))
            out.append(f"<tool_response>\n{message.content}\n</tool_response>")
            if i == last or messages[i + 1].role != "tool":
                out.append(turns.end)
            continue
        if message.role == "assistant":
            prior = i != last or options.add_generation_prompt
            strip = rewrite_cots and prior and not options.keep_cots
            body = _assistant_body(message, i, strip)
        else:
            body = message.content
        out.append(turns.open(message.role) + body + turns.end)
    if options.add_generation_prompt:
        out.append(turns.open("assistant"))
    return "".join(out)


def _assistant_body(message: Message, index: int, strip_cot: bool) -> str:
    content = message.content
    if message.reasoning_content:
        content = f"{THINK_TAGS.open}\n{message.reasoning_content}{THINK_TAGS.close_line}{content}"
    if strip_cot:
        content = strip_prior_cot(content)
    parts = [content]
    for j, call in enumerate(message.tool_calls):
        where = f"messages[{index}].tool_calls[{j}].function.arguments"
        arguments = json.dumps(arguments_object(call, where), ensure_ascii=False)
        name = json.dumps(call.name, ensure_ascii=False)
        if j > 0 or content:
            parts.append("\n")
        parts.append(f'<tool_call>\n{{"name": {name}, "arguments": {arguments}}}\n</tool_call>')
    return "".join(parts)
