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

from enum import Enum, auto

from hermesd.models.formats.deltas import Delta, OutputEvent, merge_deltas

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"


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

    def __init__(self, start_in_reasoning: bool = False) -> None:
        self._start_in_reasoning = start_in_reasoning
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
        while True:
            state = self._state
            if state is _State.START:
                stripped = self._pending.lstrip()
                if not stripped or (len(stripped) < len(OPEN_TAG) and OPEN_TAG.startswith(stripped)):
                    return  # still undecided
                if stripped.startswith(OPEN_TAG):
                    self._pending = stripped[len(OPEN_TAG) :]
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
                at = self._pending.find(CLOSE_TAG)
                if at >= 0:
                    out.append(Delta("reasoning", self._pending[:at].rstrip()))
                    self._pending = self._pending[at + len(CLOSE_TAG) :]
                    self._state = _State.AFTER_CLOSE
                    continue
                # Hold back a possible half tag and the whitespace before it.
                cut = len(self._pending) - partial_suffix(self._pending, CLOSE_TAG)
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


def split_reasoning(text: str, start_in_reasoning: bool = False) -> tuple[str | None, str]:
    """Whole-text form: ``(reasoning or None when none was opened, content)``."""
    parser = ReasoningParser(start_in_reasoning=start_in_reasoning)
    deltas = parser.feed(text) + parser.finish()
    reasoning = "".join(d.text for d in deltas if d.kind == "reasoning")
    content = "".join(d.text for d in deltas if d.kind == "content")
    return (reasoning if parser.reasoning_started else None), content
