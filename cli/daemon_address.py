"""Where the local daemon listens and which keys it takes, read from its settings (flags > env > file).

Every command that talks to a running hermesd (`tune`, `adapters`, `chat`, `ps`, `launch`) starts
from here, so they all find the daemon the same way `hermesd serve` was told to listen."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import click


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"hermesd: error: {message}", err=True)
    sys.exit(code)


@dataclass(frozen=True)
class Defaults:
    """Where the local daemon keeps its state and listens, and its first user and admin keys."""

    state_dir: Path
    serve_url: str
    admin_key: str | None
    user_key: str | None


def local_defaults(config_file: Path | None = None) -> Defaults:
    from hermesd.server.settings import load_settings

    try:
        settings = load_settings({}, config_file)
    except ValueError as exc:  # a broken config file or variable: say so, do not guess
        fail(f"cannot read hermesd settings: {exc}")
    # a daemon bound to every address is reached on loopback from this machine
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    admin = settings.admin_keys()
    try:
        users = settings.all_api_keys()
    except OSError:  # an unreadable key file: the admin key (if any) still opens the user routes
        users = []
    user = users[0] if users else (admin[0] if admin else None)
    return Defaults(settings.state_dir, f"http://{host}:{settings.port}", admin[0] if admin else None, user)
