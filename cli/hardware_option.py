"""The `--hardware FILE` option that plan, pull, doctor and setup-gpu share: a JSON hardware profile
(shared/reference/hardware-profile.md) used instead of discovering this machine; and the
`--worker HOST:PORT` / `--worker-profile FILE` options that add llama.cpp RPC workers to it."""

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


def workers_option(f: F) -> F:
    """`--worker HOST:PORT` (a live worker, asked for its devices) and `--worker-profile FILE` (a
    worker described by a profile), both repeatable; passed as `worker_addresses` and
    `worker_profiles`. Live workers come first, then profiles, each in the order given."""
    f = click.option(
        "--worker-profile",
        "worker_profiles",
        type=click.Path(path_type=Path, dir_okay=False),
        multiple=True,
        help='a worker host\'s hardware profile with its "address": "HOST:PORT" (repeatable)',
    )(f)
    return click.option(
        "--worker",
        "worker_addresses",
        metavar="HOST:PORT",
        multiple=True,
        help="a running `hermesd worker` (llama.cpp RPC) to split the model onto (repeatable)",
    )(f)
