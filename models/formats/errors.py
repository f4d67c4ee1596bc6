"""The one error the prompt formats raise for input they cannot render."""

from __future__ import annotations


class PromptError(ValueError):
    """A chat, tool list or chat template that cannot be turned into a prompt.

    `param` names the offending request field in OpenAI's dotted style (``"tools[1].function.name"``,
    ``"messages[3].role"``) so the server can put it into the error JSON; None when no single field is
    to blame (a broken chat template inside the model file).
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
