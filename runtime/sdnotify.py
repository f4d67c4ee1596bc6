"""systemd's readiness protocol (sd_notify) in pure Python.

Under `Type=notify`, systemd passes a socket address in $NOTIFY_SOCKET and waits for a datagram
"READY=1" before it considers the service started. hermesd sends it once the model is loaded and the
port is open, "STOPPING=1" when a drain begins, and "EXTEND_TIMEOUT_USEC=..." while a slow load is
still making progress. Outside systemd the variable is unset and every call is a cheap no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

logger = logging.getLogger(__name__)


def notify(state: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """Send `state` (e.g. "READY=1", "STATUS=loading") to systemd; False when not under systemd.

    Never raises: a failure to notify must not take the server down, so it is logged and reported
    as False.
    """
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # a Linux abstract socket
    elif not address.startswith("/"):
        logger.warning("NOTIFY_SOCKET=%r is not a UNIX socket path; readiness not sent", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        logger.warning("could not notify systemd (%s): %s", state.split("\n", 1)[0], exc)
        return False
    return True


def ready(status: str | None = None) -> bool:
    """Tell systemd the service is up (the model is loaded and the port is listening)."""
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def stopping(status: str | None = None) -> bool:
    """Tell systemd a shutdown (drain) has begun."""
    return notify("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))


def extend_timeout(seconds: float) -> bool:
    """Ask for `seconds` more before the start (or stop) timeout fires; send it while loading."""
    return notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")
