"""Click options generated from the Settings fields, so a flag can never drift from its setting."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import click
from pydantic import SecretStr

from hermesd.server.settings import Settings

# settings that only make sense in the config file or environment
_NOT_FLAGS: set[str] = {"upstream_key"}  # a secret on the command line is visible in `ps`


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(inner type, is_list) of Optional[...] / list[...] annotations."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else (str, False)
    if origin is list:
        return typing.get_args(annotation)[0], True
    return annotation, False


def settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for name, field in reversed(list(Settings.model_fields.items())):
        if name in _NOT_FLAGS:
            continue
        flag = "--" + name.replace("_", "-")
        inner, is_list = _unwrap(field.annotation)
        help_text = field.description or ""
        if inner is bool:
            decl = f"{flag}/--no-{flag[2:]}"
            func = click.option(decl, name, default=None, help=help_text)(func)
            continue
        kind: Any
        if typing.get_origin(inner) is Literal:
            kind = click.Choice([str(v) for v in typing.get_args(inner)])
        elif inner is Path:
            kind = click.Path(path_type=Path)
        elif inner is SecretStr:
            kind = str
        else:
            kind = inner if inner in (int, float, str) else str
        func = click.option(
            flag, name, type=kind, default=None, multiple=is_list, help=help_text, metavar=None
        )(func)
    return func


def flags_from(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keep the flags the user actually gave (None or empty tuples mean 'not given')."""
    out = {}
    for name in Settings.model_fields:
        value = kwargs.get(name)
        if value is None or value == ():
            continue
        out[name] = list(value) if isinstance(value, tuple) else value
    return out
