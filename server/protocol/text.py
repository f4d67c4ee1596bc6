"""Every request body is checked once for text that is not valid Unicode.

JSON may spell a lone UTF-16 surrogate (`"\\ud800"`): Python's JSON reader accepts it and makes a str
that cannot be encoded as UTF-8, so it would fail later — in the tokenizer, a log line or a response —
as a 500. `RequestBody` is the base of every top-level request type: it finds such a string anywhere
in the body before any field is read and refuses the request with a 400 naming the field.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, model_validator

_SURROGATE = re.compile("[\ud800-\udfff]")


class LoneSurrogateError(ValueError):
    """A text field holds a lone UTF-16 surrogate; `param` is its path (`messages[0].content`)."""

    def __init__(self, param: str) -> None:
        super().__init__(
            f"{param} contains a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), "
            "which is not valid Unicode text"
        )
        self.param = param


def find_lone_surrogate(value: Any, path: str = "") -> str | None:
    """The path of the first string (or object key) in a decoded JSON value with a lone surrogate."""
    if isinstance(value, str):
        return (path or "body") if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and _SURROGATE.search(key):
                return path or "body"
            found = find_lone_surrogate(item, where)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = find_lone_surrogate(item, f"{path}[{i}]")
            if found:
                return found
    return None


class RequestBody(BaseModel):
    """Base of every request body type: lone surrogates are refused before validation."""

    @model_validator(mode="before")
    @classmethod
    def _no_lone_surrogates(cls, data: Any) -> Any:
        param = find_lone_surrogate(data)
        if param is not None:
            raise LoneSurrogateError(param)
        return data
