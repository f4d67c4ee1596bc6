"""Synthetic thinking traces: ask a running hermesd (thinking on) to reason about examples that
have none, and train on both forms.

Each conversation whose final assistant turn has no reasoning is sent up to that turn; the reply's
`reasoning_content` becomes the reasoning of a copy of the conversation, whose answer stays the
user's own. The direct original is kept beside it: replacing it would teach the adapter to think
always, and the point of Hermes 4's hybrid mode is that it answers directly when thinking is off.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from hermesd.models.formats.prompt import message_dicts
from hermesd.runtime.tune.base import TuneError
from hermesd.runtime.tune.daemon import DaemonClient, DaemonError
from hermesd.runtime.tune.data import Conversation, DataIssue

log = logging.getLogger(__name__)


def pick_model(client: DaemonClient) -> str:
    """The daemon's base model id (adapters are listed with a `parent`)."""
    for entry in client.models():
        if not entry.get("parent") and entry.get("id"):
            return str(entry["id"])
    raise TuneError(f"hermesd at {client.url} lists no model to ask for thinking traces")


def synthesize(
    conversations: Sequence[Conversation],
    client: DaemonClient,
    *,
    path: str,
    model: str | None = None,
    max_tokens: int = 2048,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Conversation], list[DataIssue]]:
    """The conversations plus a thinking copy of each direct one; issues for those that got none."""
    model = model or pick_model(client)
    todo = [c for c in conversations if not c.messages[-1].reasoning_content]
    out = list(conversations)
    issues: list[DataIssue] = []
    for done, conv in enumerate(todo, start=1):
        body: dict[str, Any] = {
            "model": model,
            "messages": message_dicts(conv.messages[:-1]),
            "max_tokens": max_tokens,
            "temperature": 0.6,
            "chat_template_kwargs": {"thinking": True},
        }
        if conv.tools:
            body["tools"] = list(conv.tools)
        try:
            reply = client.chat(body)
        except DaemonError as exc:
            if exc.status is None:
                raise
            issues.append(DataIssue(path, conv.line, f"no thinking trace synthesized: {exc}", dropped=False))
            continue
        reasoning = _reasoning(reply)
        if reasoning:
            last = replace(conv.messages[-1], reasoning_content=reasoning)
            out.append(replace(conv, messages=(*conv.messages[:-1], last)))
        else:
            issues.append(
                DataIssue(
                    path,
                    conv.line,
                    "no thinking trace synthesized: the reply had no reasoning",
                    dropped=False,
                )
            )
        if on_progress is not None:
            on_progress(done, len(todo))
    log.info(
        "synthesized %d thinking traces for %d direct examples", len(out) - len(conversations), len(todo)
    )
    return out, issues


def _reasoning(reply: dict[str, Any]) -> str:
    try:
        message = reply["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return ""
    value = message.get("reasoning_content") or message.get("reasoning") or ""
    return value.strip() if isinstance(value, str) else ""


def write_conversations(path: Path, conversations: Sequence[Conversation]) -> None:
    """Save a dataset in the OpenAI chat shape (the run folder keeps the synthesized one)."""
    lines = []
    for conv in conversations:
        record: dict[str, Any] = {"messages": message_dicts(list(conv.messages))}
        if conv.tools:
            record["tools"] = list(conv.tools)
        lines.append(json.dumps(record, ensure_ascii=False))
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
