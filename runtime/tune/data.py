"""Training data: JSONL in three shapes, checked line by line before any training starts.

Accepted shapes (one JSON object per line):
- OpenAI chat: ``{"messages": [{"role", "content", "reasoning_content"?, "tool_calls"?, ...}], "tools"?}``
- ShareGPT: ``{"conversations": [{"from": "human"|"gpt"|"system"|"tool"..., "value": ...}]}``
- prompt/completion: ``{"prompt": ..., "completion": ..., "system"?, "reasoning"?}``

OpenAI chat lines go through the server's own converter (`messages_from_openai`, strict: a think
block that is unclosed, repeated or given twice is refused), and the other shapes through its parts,
so a turn means the same when it is trained on and when it is served. An assistant turn's reasoning
comes either inline (a think block before the answer) or in ``reasoning_content``/``reasoning``; both
become `Message.reasoning_content`, and the renderer writes it back in the one shape the model emits.
Every problem is a `DataIssue` naming the file and line; nothing here raises for bad data, so the user
sees all problems at once.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hermesd.models.chat import Message, Role
from hermesd.models.formats.errors import PromptError
from hermesd.models.formats.messages import assistant_reasoning, message_text, messages_from_openai

log = logging.getLogger(__name__)

SHAREGPT_ROLES: dict[str, Role] = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "tool": "tool",
    "function": "tool",
    "function_response": "tool",
    "observation": "tool",
}


@dataclass(frozen=True)
class DataIssue:
    path: str
    line: int
    reason: str
    dropped: bool = True  # False: a warning (e.g. truncated), the example is kept

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class Conversation:
    """One training example: a chat that ends with the assistant turn(s) to learn."""

    line: int
    messages: tuple[Message, ...]
    tools: tuple[dict[str, Any], ...] = ()

    @property
    def has_reasoning(self) -> bool:
        return any(m.role == "assistant" and m.reasoning_content for m in self.messages)


@dataclass
class LoadedData:
    path: str
    conversations: list[Conversation] = field(default_factory=list)
    issues: list[DataIssue] = field(default_factory=list)
    lines: int = 0


class _Bad(ValueError):
    """A problem with one line; becomes a DataIssue."""


def load_jsonl(path: Path) -> LoadedData:
    """Read and check every line of a JSONL file. Blank lines are skipped silently."""
    out = LoadedData(path=str(path))
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        out.issues.append(DataIssue(str(path), 0, f"cannot read the file: {exc.strerror}"))
        return out
    with handle:
        try:
            for number, raw in enumerate(handle, start=1):
                out.lines = number
                if not raw.strip():
                    continue
                try:
                    out.conversations.append(parse_line(raw, number))
                except _Bad as exc:
                    out.issues.append(DataIssue(str(path), number, str(exc)))
        except UnicodeDecodeError as exc:
            out.issues.append(DataIssue(str(path), out.lines + 1, f"not UTF-8 text ({exc.reason})"))
    return out


def parse_line(raw: str, line: int) -> Conversation:
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _Bad(f"bad JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(record, dict):
        raise _Bad(f"expected a JSON object, got {type(record).__name__}")
    try:
        if "messages" in record:
            messages = messages_from_openai(record["messages"], strict=True)
        elif "conversations" in record:
            messages = _sharegpt_messages(record["conversations"])
        elif "prompt" in record and "completion" in record:
            messages = _prompt_completion(record)
        else:
            raise _Bad("unknown shape: expected a 'messages', 'conversations' or 'prompt'+'completion' field")
    except PromptError as exc:
        raise _Bad(str(exc)) from None
    tools = _tools(record.get("tools"))
    _check_chat(messages)
    return Conversation(line=line, messages=tuple(messages), tools=tools)


def _sharegpt_messages(raw: Any) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise _Bad("'conversations' must be a non-empty list")
    out: list[Message] = []
    for i, item in enumerate(raw):
        where = f"conversations[{i}]"
        if not isinstance(item, Mapping):
            raise _Bad(f"{where} must be an object")
        source = item.get("from")
        role = SHAREGPT_ROLES.get(source) if isinstance(source, str) else None
        if role is None:
            raise _Bad(f"{where}: unknown role {source!r} (expected one of {', '.join(SHAREGPT_ROLES)})")
        content = message_text(item.get("value"), f"{where}.value")
        reasoning = None
        if role == "assistant":
            content, reasoning = _assistant(content, item, f"{where}.value", f"{where}.reasoning_content")
        out.append(Message(role=role, content=content, reasoning_content=reasoning))
    return out


def _prompt_completion(record: Mapping[str, Any]) -> list[Message]:
    messages: list[Message] = []
    if record.get("system") is not None:
        messages.append(Message(role="system", content=message_text(record["system"], "system")))
    messages.append(Message(role="user", content=message_text(record["prompt"], "prompt")))
    completion = message_text(record["completion"], "completion")
    answer, reasoning = _assistant(completion, record, "completion", "reasoning_content")
    messages.append(Message(role="assistant", content=answer, reasoning_content=reasoning))
    return messages


def _assistant(
    content: str, item: Mapping[str, Any], where: str, reasoning_where: str
) -> tuple[str, str | None]:
    separate = item.get("reasoning_content") or item.get("reasoning")
    return assistant_reasoning(content, separate, where=where, reasoning_where=reasoning_where, strict=True)


def _tools(raw: Any) -> tuple[dict[str, Any], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(t, Mapping) for t in raw):
        raise _Bad("'tools' must be a list of function definitions")
    return tuple(dict(t) for t in raw)


def _check_chat(messages: Sequence[Message]) -> None:
    for i, m in enumerate(messages):
        if m.role == "assistant":
            if not m.content.strip() and not m.tool_calls:
                raise _Bad(f"message {i} (assistant): empty content")
        elif not m.content.strip():
            raise _Bad(f"message {i} ({m.role}): empty content")
        if m.role == "system" and i != 0:
            raise _Bad(f"message {i}: a system message may only come first")
    if messages[-1].role != "assistant":
        raise _Bad(f"the conversation must end with an assistant turn (the last is {messages[-1].role!r})")
    if not any(m.role in ("user", "tool") for m in messages):
        raise _Bad("the conversation has no user turn")


def split_train_eval(
    items: Sequence[Any], eval_fraction: float, seed: int, min_eval_examples: int = 10
) -> tuple[list[Any], list[Any]]:
    """A seeded split. Datasets too small to spare `min_eval_examples` keep everything for training
    (the caller then evaluates on the training set and says so)."""
    import random

    n_eval = round(len(items) * eval_fraction)
    if eval_fraction <= 0 or n_eval < min_eval_examples or len(items) - n_eval < 1:
        return list(items), []
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


def format_issues(issues: Iterable[DataIssue], limit: int = 50) -> list[str]:
    lines = [str(i) + ("" if i.dropped else " (kept)") for i in issues]
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more"]
    return lines


# -- sizes before tokenizing (for `tune --plan`, which loads no tokenizer)

AUTO_MAX_SEQ_LEN = 16384  # Hermes 4 was trained at 16,384 tokens; longer rows need an explicit --max-seq-len
CHARS_PER_TOKEN = 4.0  # English prose and code in byte-level BPE vocabularies of 128k-155k tokens
TOKENS_PER_MESSAGE = 6  # the role header and end-of-turn tokens around each message


def estimate_tokens(conv: Conversation) -> int:
    """About how many tokens a conversation renders to (CHARS_PER_TOKEN characters a token)."""
    chars = 0
    for m in conv.messages:
        chars += len(m.content) + len(m.reasoning_content or "")
        chars += sum(len(c.name) + len(c.arguments) + 16 for c in m.tool_calls)
    chars += sum(len(json.dumps(t, ensure_ascii=False)) for t in conv.tools)
    return math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(conv.messages)


def choose_max_seq_len(
    lengths: Sequence[int],
    *,
    coverage: float = 0.95,
    step: int = 256,
    floor: int = 256,
    cap: int | None = None,
) -> int:
    """The default --max-seq-len for rows of these token lengths: long enough for `coverage` of them,
    rounded up to a multiple of `step`, at least `floor`, and at most `cap` (what the plan fits)."""
    if not lengths:
        return max(floor, min(cap, 2048) if cap else 2048)
    ordered = sorted(lengths)
    needed = ordered[max(0, math.ceil(coverage * len(ordered)) - 1)]
    chosen = max(floor, math.ceil(needed / step) * step)
    if cap is not None:
        chosen = min(chosen, max(floor, cap // step * step))
    return chosen
