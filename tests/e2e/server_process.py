"""Start a real `hermesd serve` subprocess on 127.0.0.1 and wait until it is ready."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        text = httpx.get(self.base_url + "/metrics", timeout=10).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out


def hermesd_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hermesd.cli.main", *args]


@contextlib.contextmanager
def run_server(
    model: Path | None,
    tmp: Path,
    *flags: str,
    env: dict[str, str] | None = None,
    wait: bool = True,
    timeout: float = 120,
    port: int | None = None,
) -> Iterator[ServerProcess]:
    port = port or free_port()
    log_path = tmp / f"hermesd-{port}.log"
    model_flag = ["--model", str(model)] if model is not None else []
    cmd = hermesd_cmd(
        "serve",
        *model_flag,
        "--port",
        str(port),
        "--state-dir",
        str(tmp / "state"),
        "--threads",
        "2",
        *flags,
    )
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        if wait:
            wait_ready(server, timeout)
        yield server
    finally:
        stop_process(proc, 30)


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM (a clean shutdown), then SIGKILL if it has not exited within `timeout` s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(server: ServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"hermesd exited with {server.proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.base_url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"hermesd was not ready after {timeout} s:\n{server.log()}")
