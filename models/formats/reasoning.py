"""Split model output into reasoning and answer content, as it streams.

Rules (one machine serves both the streaming and the whole-text path, so they cannot disagree):
- A ``<think>`` at the very start of the output (after optional whitespace) opens reasoning; the first
  ``</think>`` closes it. ``start_in_reasoning=True`` is for prompts that already end in ``<think>``:
  the output starts as reasoning (a repeated ``<think>`` at its start is swallowed too).
- Once content has started, tags are ordinary text: a ``</think>`` inside the answer's code stays.
- Output whose reasoning never closes is all reasoning; output with no tags is all content, unchanged.
- The delimiting tags never appear in either field. Whitespace right after ``<think>``, right before
  ``</think>`` (and at the end of unclosed reasoning) and right after ``</think>`` is dropped; to know
  whether whitespace is "right before ``</think>``", trailing whitespace of reasoning is held back until
  the next non-whitespace text arrives.
- A half-received tag (``<thi``, ``</th``) is held back and released as text once it proves not to be one.
- No empty delta is ever emitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

from hermesd.models.formats.deltas import Delta, OutputEvent, merge_deltas


@dataclass(frozen=True)
class ThinkTags:
    """How a prompt format's model marks its reasoning in the text it writes."""

    open: str
    close: str

    @property
    def close_line(self) -> str:
        """The close tag on a line of its own, as the model writes it (``<think>\\n...\\n</think>\\nanswer``):
        what the renderer writes after a turn's reasoning, and the engine when a reasoning budget runs out."""
        return f"\n{self.close}\n"


# The one spelling of the tags. Every format hermesd renders uses them: the three Hermes 4 styles
# (each `RenderedPrompt` carries its format's tags), plain ChatML, and the GGUF templates of other
# reasoning models (Qwen 3, DeepSeek R1). A format with other tags gets its own constant here.
THINK_TAGS = ThinkTags(open="<think>", close="</think>")


# `reasoning_effort` (OpenAI, llama-server, vLLM), `reasoning.effort` (Responses API, OpenRouter) and
# Ollama's `think` levels, as (reasoning on, budget in reasoning tokens; None: up to the context).
# Hermes 4 has one think switch and no levels of its own, so a level is a cap on the reasoning.
REASONING_EFFORTS: dict[str, tuple[bool, int | None]] = {
    "none": (False, None),
    "minimal": (True, 512),
    "low": (True, 2048),
    "medium": (True, 8192),
    "high": (True, 16384),
    "xhigh": (True, 32768),
    "max": (True, None),
}


@dataclass(frozen=True)
class Reasoning:
    """One request's reasoning: decided once by the server, carried to the engine in the request.

    The server reads the switches from the request (`thinking`, `keep_cots`, `budget`, `separate`) and
    the rest from the prompt it rendered (`starts_open`, `tags`). The engine caps the reasoning at
    `budget` tokens and starts an output constraint at `constraint_trigger`; the server splits the
    output with `parser()`. Both follow the output with that one state machine, which knows where the
    close tag was seen, so they cannot disagree on where reasoning ends.
    """

    thinking: bool = False  # the request asked for reasoning: the prompt carries the thinking switch
    keep_cots: bool = False  # earlier assistant turns keep their reasoning in the prompt
    # Most tokens the model may spend inside reasoning; at the budget the engine writes
    # `tags.close_line` itself and the model goes on to its answer (llama-server's --reasoning-budget,
    # vLLM's thinking_token_budget).
    budget: int | None = None
    separate: bool = True  # reasoning goes to its own field; False leaves the tags inline in the content
    starts_open: bool = False  # the prompt ends inside an open think: the output starts as reasoning
    tags: ThinkTags = THINK_TAGS

    @property
    def constraint_trigger(self) -> str | None:
        """Where a constraint on the output (a grammar) starts: at the close tag when the output may
        begin with reasoning, so the reasoning stays free text; None when it applies from the start."""
        return self.tags.close if self.thinking or self.starts_open else None

    def parser(self) -> ReasoningParser:
        """A fresh state machine over this request's output."""
        return ReasoningParser(start_in_reasoning=self.starts_open, tags=self.tags)


class _State(Enum):
    START = auto()  # nothing but whitespace (or part of "<think>") seen yet
    REASONING_LEAD = auto()  # just after <think>: dropping whitespace
    REASONING = auto()
    AFTER_CLOSE = auto()  # just after </think>: dropping whitespace
    CONTENT = auto()


def partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper beginning of `tag` (a tag cut in half)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class ReasoningParser:
    """Feed output text in pieces; get reasoning and content deltas back."""

    def __init__(self, start_in_reasoning: bool = False, tags: ThinkTags = THINK_TAGS) -> None:
        self._start_in_reasoning = start_in_reasoning
        self._tags = tags
        self._state = _State.START
        self._pending = ""  # text received but not yet emitted (held back or undecided)
        self._started = start_in_reasoning

    @property
    def in_reasoning(self) -> bool:
        """True while the text being generated counts as reasoning (for a reasoning-token budget)."""
        if self._state is _State.START:
            return self._start_in_reasoning
        return self._state in (_State.REASONING_LEAD, _State.REASONING)

    @property
    def reasoning_closed(self) -> bool:
        """True once ``</think>`` has been seen."""
        return self._state in (_State.AFTER_CLOSE, _State.CONTENT) and self._started

    @property
    def reasoning_started(self) -> bool:
        """True when the output has (or the prompt had) opened reasoning."""
        return self._started

    @property
    def settled(self) -> bool:
        """True once the rest of the output is answer: reasoning closed, or the output began without it."""
        return self._state in (_State.AFTER_CLOSE, _State.CONTENT)

    def feed(self, text: str) -> list[Delta]:
        self._pending += text
        out: list[OutputEvent] = []
        self._advance(out)
        return _deltas(out)

    def finish(self) -> list[Delta]:
        out: list[OutputEvent] = []
        self._advance(out)
        rest, self._pending = self._pending, ""
        if self._state is _State.START:
            if self._start_in_reasoning:
                out.append(Delta("reasoning", rest.strip()))
            else:
                out.append(Delta("content", rest))
        elif self._state is _State.REASONING:
            out.append(Delta("reasoning", rest.rstrip()))
        elif self._state is _State.CONTENT:
            out.append(Delta("content", rest))
        # REASONING_LEAD and AFTER_CLOSE hold only whitespace, which is dropped.
        return _deltas(out)

    def _advance(self, out: list[OutputEvent]) -> None:
        # Each step either changes state or returns; the loop ends when nothing more can be decided.
        open_tag, close_tag = self._tags.open, self._tags.close
        while True:
            state = self._state
            if state is _State.START:
                stripped = self._pending.lstrip()
                if not stripped or (len(stripped) < len(open_tag) and open_tag.startswith(stripped)):
                    return  # still undecided
                if stripped.startswith(open_tag):
                    self._pending = stripped[len(open_tag) :]
                    self._state = _State.REASONING_LEAD
                    self._started = True
                elif self._start_in_reasoning:
                    self._pending = stripped
                    self._state = _State.REASONING_LEAD
                else:
                    self._state = _State.CONTENT
            elif state is _State.REASONING_LEAD or state is _State.AFTER_CLOSE:
                stripped = self._pending.lstrip()
                self._pending = stripped
                if not stripped:
                    return
                self._state = _State.REASONING if state is _State.REASONING_LEAD else _State.CONTENT
            elif state is _State.REASONING:
                at = self._pending.find(close_tag)
                if at >= 0:
                    out.append(Delta("reasoning", self._pending[:at].rstrip()))
                    self._pending = self._pending[at + len(close_tag) :]
                    self._state = _State.AFTER_CLOSE
                    continue
                # Hold back a possible half tag and the whitespace before it.
                cut = len(self._pending) - partial_suffix(self._pending, close_tag)
                body = self._pending[:cut].rstrip()
                out.append(Delta("reasoning", body))
                self._pending = self._pending[len(body) :]
                return
            else:  # CONTENT: everything from here on is answer text
                out.append(Delta("content", self._pending))
                self._pending = ""
                return


def _deltas(events: list[OutputEvent]) -> list[Delta]:
    return [e for e in merge_deltas(events) if isinstance(e, Delta)]


def split_reasoning(
    text: str, start_in_reasoning: bool = False, tags: ThinkTags = THINK_TAGS
) -> tuple[str | None, str]:
    """Whole-text form: ``(reasoning or None when none was opened, content)``."""
    parser = ReasoningParser(start_in_reasoning=start_in_reasoning, tags=tags)
    deltas = parser.feed(text) + parser.finish()
    reasoning = "".join(d.text for d in deltas if d.kind == "reasoning")
    content = "".join(d.text for d in deltas if d.kind == "content")
    return (reasoning if parser.reasoning_started else None), content
