"""The `--hardware FILE` option that plan, pull, doctor and setup-gpu share: a JSON hardware profile
(shared/reference/hardware-profile.md) used instead of discovering this machine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def hardware_option(help: str) -> Callable[[F], F]:
    """The option, passed to the command as `hardware_file` (None: discover this machine)."""
    return click.option(
        "--hardware",
        "hardware_file",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help=help,
    )
