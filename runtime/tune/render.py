"""Conversations -> token ids and a loss mask, rendered exactly as the server renders prompts.

The server builds a prompt with `render_chat` (the format it detected from the GGUF), tokenizes it
alone, and the model generates the reply token by token until an end-of-generation token. Training
does the same: each assistant turn's context is `render_chat(..., add_generation_prompt=True)` of the
chat before it, tokenized alone; its target is the rest of the turn up to and including the turn's
end token. Only target tokens carry loss, so the adapter learns to answer, never to write prompts.

Thinking: a conversation whose assistant turns carry reasoning is rendered with thinking on (the
deep-thinking system prompt is present and the trained turn keeps its ``<think>`` block); a direct
one with thinking off. That is the hybrid-reasoning contract: think when asked, answer when not.

With thinking on, the renderer rewrites earlier assistant turns (their reasoning is dropped, as the
server does). A later turn's context then differs from an earlier turn's full text, so such turns
become separate rows; turns whose contexts extend each other share one row.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from hermesd.models.chat import ChatOptions, Message
from hermesd.models.formats.detect import detect_chat_format, render_chat
from hermesd.models.formats.errors import PromptError
from hermesd.runtime.tune.data import Conversation, DataIssue

log = logging.getLogger(__name__)

LengthPolicy = Literal["drop", "truncate"]


class Tokenizer(Protocol):
    """What training needs from a tokenizer; llama.cpp's (LlamaModel) is the reference."""

    eos_id: int

    def tokenize(self, text: str, *, add_bos: bool | None = None) -> list[int]: ...

    def is_eog(self, token: int) -> bool: ...


@dataclass(frozen=True)
class ChatFormat:
    """How the served model's prompts are built: the same four values the server uses."""

    name: str
    bos_token: str = ""
    eos_token: str = ""
    template: str | None = None

    @classmethod
    def detect(
        cls, metadata: Mapping[str, Any], template: str | None, bos_token: str, eos_token: str
    ) -> ChatFormat:
        name = detect_chat_format(dict(metadata) | {"tokenizer.chat_template": template or ""})
        return cls(name=name, bos_token=bos_token, eos_token=eos_token, template=template)

    def render(self, messages: Sequence[Message], options: ChatOptions) -> str:
        return render_chat(
            self.name,
            messages,
            options,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            template=self.template,
        ).text


@dataclass(frozen=True)
class Row:
    """One training row: token ids and whether each is a loss target."""

    line: int
    ids: tuple[int, ...]
    trained: tuple[bool, ...]
    reasoning: bool

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_trained(self) -> int:
        return sum(self.trained)


@dataclass(frozen=True)
class _Turn:
    context: str  # the prompt the server would build before this assistant turn
    full: str  # context + the turn as the model writes it (+ the text after its end token)


def _turns(conv: Conversation, fmt: ChatFormat, thinking: bool) -> list[_Turn]:
    options = ChatOptions(thinking=thinking, tools=conv.tools)
    turns = []
    for i, message in enumerate(conv.messages):
        if message.role != "assistant":
            continue
        context = fmt.render(conv.messages[:i], options)
        full = fmt.render(conv.messages[: i + 1], replace(options, add_generation_prompt=False))
        if not full.startswith(context):
            raise PromptError(
                f"message {i}: the chat format renders this assistant turn in a way hermesd cannot split "
                "into prompt and reply",
                f"messages[{i}]",
            )
        turns.append(_Turn(context, full))
    return turns


def _rows_of_turns(turns: Sequence[_Turn]) -> list[list[_Turn]]:
    """Group turns into rows: a turn joins the row of a later turn whose context extends its text."""
    rows: list[list[_Turn]] = []
    for turn in reversed(turns):
        if rows and rows[-1][0].context.startswith(turn.full):
            rows[-1].insert(0, turn)
        else:
            rows.append([turn])
    rows.reverse()
    return rows


def _reply_ids(tok: Tokenizer, text: str) -> tuple[list[int], list[bool]]:
    """A reply's tokens; loss up to and including its end-of-generation token, none after it (the
    newline ChatML puts after <|im_end|> is the next prompt's, not the model's)."""
    ids = tok.tokenize(text, add_bos=False)
    ends = [j for j, t in enumerate(ids) if tok.is_eog(t)]
    if not ends:
        # A template with no end token in its turns: teach the model to stop with EOS anyway.
        return [*ids, tok.eos_id], [True] * (len(ids) + 1)
    stop = ends[0] + 1
    return ids, [True] * stop + [False] * (len(ids) - stop)


def tokenize_row(tok: Tokenizer, turns: Sequence[_Turn], line: int, reasoning: bool) -> Row:
    ids: list[int] = []
    trained: list[bool] = []
    done = ""  # the text already tokenized
    for turn in turns:
        prompt = turn.context[len(done) :]
        prompt_ids = tok.tokenize(prompt, add_bos=None if not done else False)
        reply, mask = _reply_ids(tok, turn.full[len(turn.context) :])
        ids += prompt_ids + reply
        trained += [False] * len(prompt_ids) + mask
        done = turn.full
    return Row(line=line, ids=tuple(ids), trained=tuple(trained), reasoning=reasoning)


def build_rows(
    conv: Conversation,
    fmt: ChatFormat,
    tok: Tokenizer,
    *,
    path: str,
    max_seq_len: int,
    policy: LengthPolicy,
) -> tuple[list[Row], list[DataIssue]]:
    """The training rows of one conversation, and the issues found (each names the line)."""
    thinking = conv.has_reasoning
    try:
        turn_rows = _rows_of_turns(_turns(conv, fmt, thinking))
    except PromptError as exc:
        return [], [DataIssue(path, conv.line, str(exc))]
    rows: list[Row] = []
    issues: list[DataIssue] = []
    for turns in turn_rows:
        row, issue = limit_row(tokenize_row(tok, turns, conv.line, thinking), max_seq_len, policy, path)
        if row is not None:
            rows.append(row)
        if issue is not None:
            issues.append(issue)
    return rows, issues


def limit_row(
    row: Row, max_seq_len: int, policy: LengthPolicy, path: str
) -> tuple[Row | None, DataIssue | None]:
    """A row within `max_seq_len` tokens: as it is, truncated (`policy` "truncate", while an assistant
    token is left) or dropped; and the issue that says so."""
    if len(row) <= max_seq_len:
        return row, None
    if policy == "drop":
        return None, DataIssue(path, row.line, f"{len(row)} tokens, longer than --max-seq-len {max_seq_len}")
    cut = Row(row.line, row.ids[:max_seq_len], row.trained[:max_seq_len], row.reasoning)
    if cut.n_trained == 0:
        return None, DataIssue(
            path,
            row.line,
            f"{len(row)} tokens; truncated to --max-seq-len {max_seq_len} no assistant token is left",
        )
    return cut, DataIssue(path, row.line, f"{len(row)} tokens, truncated to {max_seq_len}", dropped=False)
