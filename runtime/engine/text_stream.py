"""Turning a sequence's tokens into text, pure Python so it is tested by tables.

`TextAssembler` joins token bytes into complete UTF-8 text and applies stop strings, holding back
only what could still turn into a stop string. `ReasoningTracker` follows whether the model is
inside its reasoning, so the engine can count and cap reasoning tokens.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

from hermesd.models.formats.reasoning import Reasoning


@dataclass
class TextAssembler:
    stops: tuple[str, ...] = ()
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    _held: str = ""
    stopped: bool = False
    matched: str | None = None  # the stop string that was seen

    def push(self, data: bytes) -> str:
        """Add a token's bytes; return the text that is now safe to emit. After a stop string
        is seen, `stopped` is true and the text before it is returned."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(data)
        if not self.stops:
            self._held = ""
            return text
        cut, self.matched = _first_stop(text, self.stops)
        if cut is not None:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = _longest_stop_prefix_suffix(text, self.stops)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """Release what was held back at the end of generation."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        cut, self.matched = _first_stop(text, self.stops)
        if cut is not None:
            self.stopped = True
            return text[:cut]
        return text


def _first_stop(text: str, stops: tuple[str, ...]) -> tuple[int | None, str | None]:
    """Where the first stop string in `text` begins, and which one it is."""
    best: int | None = None
    which: str | None = None
    for stop in stops:
        i = text.find(stop)
        if i >= 0 and (best is None or i < best):
            best, which = i, stop
    return best, which


def _longest_stop_prefix_suffix(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


class ReasoningTracker:
    """Counts the tokens a request spends inside its reasoning, for its budget and its usage.

    Where reasoning opens and closes is decided by the request's own `Reasoning.parser()`, the state
    machine the server splits the output with, so the engine and the server cannot disagree on it.
    """

    def __init__(self, reasoning: Reasoning | None = None) -> None:
        self.reasoning = reasoning if reasoning is not None else Reasoning()
        self.tokens = 0
        self._parser = self.reasoning.parser()

    @property
    def in_reasoning(self) -> bool:
        return self._parser.in_reasoning

    @property
    def over_budget(self) -> bool:
        """True while reasoning has used up its budget: time to write the close tag for the model."""
        budget = self.reasoning.budget
        return budget is not None and self.in_reasoning and self.tokens >= budget

    def push(self, text: str) -> None:
        """Account one token's text (call once per generated token, even when the text is empty).
        The token that opens reasoning and the one that closes it both count as reasoning."""
        if self._parser.settled:
            return
        before = self._parser.in_reasoning
        self._parser.feed(text)
        if before or self._parser.in_reasoning:
            self.tokens += 1

    def close(self) -> str:
        """End the reasoning as if the model had: returns the text to write for it (not counted)."""
        text = self.reasoning.tags.close_line
        self._parser.feed(text)
        return text
