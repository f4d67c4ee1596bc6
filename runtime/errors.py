"""Errors the runtime raises. The server maps each to one HTTP status in one place."""

from __future__ import annotations


class HermesdError(Exception):
    """Base class of every error hermesd means to show a user."""


class ModelLoadError(HermesdError):
    """A model or adapter file could not be loaded (missing, malformed, out of memory)."""


class DraftVocabMismatch(ModelLoadError):
    """The draft model does not share the model's vocabulary: a wrong setting, which loading with
    fewer GPU layers would not fix."""


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


class UpstreamError(HermesdError):
    """The upstream server that `hermesd serve --upstream` forwards to failed, timed out or refused
    a request. Carries the HTTP status and OpenAI error fields the client should see."""

    def __init__(
        self,
        message: str,
        status: int,
        *,
        type: str = "server_error",
        code: str | None = "upstream_error",
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.retry_after = retry_after
