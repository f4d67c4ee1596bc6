"""Errors the runtime raises. The server maps each to one HTTP status in one place."""

from __future__ import annotations


class HermesdError(Exception):
    """Base class of every error hermesd means to show a user."""


class ModelLoadError(HermesdError):
    """A model or adapter file could not be loaded (missing, malformed, out of memory)."""


class EngineOverloaded(HermesdError):
    """Every slot is busy and the wait queue is full."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ContextLengthExceeded(HermesdError):
    """The prompt alone does not fit the context of one sequence. The message is in the words
    agents parse to learn the real limit ("maximum context length is N tokens")."""

    def __init__(self, prompt_tokens: int, max_tokens: int, context: int) -> None:
        super().__init__(
            f"This model's maximum context length is {context} tokens; the request has "
            f"{prompt_tokens} tokens. Please reduce the length of the messages."
        )
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.context = context


class AdapterError(HermesdError):
    """An adapter cannot be loaded, found or applied."""


class AdapterNotFound(AdapterError):
    pass


class EngineShuttingDown(HermesdError):
    pass
