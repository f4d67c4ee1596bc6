"""The sd_notify helper against real AF_UNIX datagram sockets."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hermesd.runtime import sdnotify


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(5)
        yield address, sock


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    name = f"hermesd-test-{os.getpid()}-{os.urandom(4).hex()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        yield "@" + name, sock


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        (lambda: sdnotify.notify("READY=1"), b"READY=1"),
        (lambda: sdnotify.ready("model loaded"), b"READY=1\nSTATUS=model loaded"),
        (lambda: sdnotify.stopping(), b"STOPPING=1"),
        (lambda: sdnotify.extend_timeout(90), b"EXTEND_TIMEOUT_USEC=90000000"),
    ],
)
@pytest.mark.parametrize("kind", ["path_socket", "abstract_socket"])
def test_datagram_arrives(kind, send, expected, request, monkeypatch):
    address, sock = request.getfixturevalue(kind)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert send() is True
    assert sock.recv(4096) == expected


def test_unset_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": ""}) is False


def test_explicit_environ_wins(path_socket, monkeypatch):
    address, sock = path_socket
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("STATUS=x", environ={"NOTIFY_SOCKET": address}) is True
    assert sock.recv(4096) == b"STATUS=x"


@pytest.mark.parametrize(
    "address",
    ["/nonexistent/dir/notify.sock", "vsock:2:1234", "relative.sock"],
)
def test_unreachable_socket_returns_false_and_logs(address, caplog):
    with caplog.at_level(logging.WARNING, logger="hermesd.runtime.sdnotify"):
        assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": address}) is False
    assert caplog.records, "a failed notification must be logged"
