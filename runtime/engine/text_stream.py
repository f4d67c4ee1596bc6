"""Turning a sequence's tokens into text, pure Python so it is tested by tables.

`TextAssembler` joins token bytes into complete UTF-8 text and applies stop strings, holding back
only what could still turn into a stop string. `ReasoningTracker` follows whether the model is
inside its `<think>` section, so the engine can count and cap reasoning tokens.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field


@dataclass
class TextAssembler:
    stops: tuple[str, ...] = ()
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    _held: str = ""
    stopped: bool = False

    def push(self, data: bytes) -> str:
        """Add a token's bytes; return the text that is now safe to emit. After a stop string
        is seen, `stopped` is true and the text before it is returned."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(data)
        if not self.stops:
            self._held = ""
            return text
        cut = _first_stop(text, self.stops)
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
        cut = _first_stop(text, self.stops) if self.stops else None
        if cut is not None:
            self.stopped = True
            return text[:cut]
        return text


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    best: int | None = None
    for stop in stops:
        i = text.find(stop)
        if i >= 0 and (best is None or i < best):
            best = i
    return best


def _longest_stop_prefix_suffix(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


@dataclass
class ReasoningTracker:
    """Follows the model's `<think>` section from the text it writes.

    Reasoning opens when the output starts (after whitespace) with the open tag, or at once when
    the prompt opened it; it closes at the first close tag after that. Counting is in tokens.
    """

    open_tag: str = "<think>"
    close_tag: str = "</think>"
    starts_open: bool = False
    state: str = "undecided"  # undecided -> reasoning -> answer, or undecided -> answer
    tokens: int = 0
    _text: str = ""

    def __post_init__(self) -> None:
        if self.starts_open:
            self.state = "reasoning"

    @property
    def in_reasoning(self) -> bool:
        return self.state == "reasoning"

    def push(self, text: str) -> None:
        """Account one token's text (call once per generated token, even when the text is empty)."""
        if self.state == "answer":
            return
        if self.state == "reasoning":
            self.tokens += 1
        self._text += text
        if self.state == "undecided":
            head = self._text.lstrip()
            if head.startswith(self.open_tag):
                self.state = "reasoning"
                self.tokens = 1
                self._text = head[len(self.open_tag) :]
            elif head and not self.open_tag.startswith(head):
                self.state = "answer"
                return
        if self.state == "reasoning" and self.close_tag in self._text:
            self.state = "answer"
            self._text = ""
        elif self.state == "reasoning":
            # keep only what could still be the start of the close tag
            self._text = self._text[-(len(self.close_tag) - 1) :]

    def close(self) -> None:
        self.state = "answer"
