"""`hermesd worker`: lend this host's devices to a main `hermesd serve --worker ADDR:PORT`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from hermesd.cli.logs import setup_logging
from hermesd.runtime.errors import HermesdError

SIZE_UNITS = {"": 1, "mib": 1, "m": 1, "gib": 1024, "g": 1024, "tib": 1024 * 1024, "t": 1024 * 1024}


def fail(message: str) -> None:
    click.echo(f"hermesd: error: {message}", err=True)
    sys.exit(2)


def parse_mib(text: str) -> int:
    """ "48GiB", "512MiB", "2048" (MiB) -> MiB."""
    raw = text.strip().lower().replace(" ", "")
    number = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(number) :]
    if unit not in SIZE_UNITS or not number:
        raise click.BadParameter(f"{text!r} is not a size such as 48GiB or 512MiB")
    try:
        value = float(number)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a size such as 48GiB or 512MiB") from None
    mib = int(value * SIZE_UNITS[unit])
    if mib <= 0:
        raise click.BadParameter(f"{text!r} is not a positive size")
    return mib


def default_cache_dir() -> Path:
    # systemd's CacheDirectory= sets CACHE_DIRECTORY; elsewhere follow XDG
    if os.environ.get("CACHE_DIRECTORY"):
        return Path(os.environ["CACHE_DIRECTORY"].split(":")[0]) / "rpc"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hermesd" / "rpc"


@click.command("worker")
@click.option(
    "--listen", required=True, metavar="ADDR:PORT", help="a loopback or private address of this host"
)
@click.option(
    "--allow-from",
    "allow_from",
    required=True,
    multiple=True,
    metavar="ADDR[,ADDR...]",
    help="the main host(s) that may connect (addresses or private networks); every other peer is refused",
)
@click.option(
    "--device",
    "devices",
    multiple=True,
    metavar="NAME",
    help="llama.cpp device(s) to lend, e.g. CUDA0 or CPU (default: every GPU, else the CPU)",
)
@click.option(
    "--memory-limit",
    default=None,
    metavar="SIZE",
    help="the most memory the devices offer, e.g. 48GiB (required for the CPU)",
)
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="tensor cache, so a restart does not resend weights",
)
@click.option("--threads", type=int, default=None, help="CPU threads of the RPC server")
@click.option("--log-level", default="info")
def worker_command(
    listen: str,
    allow_from: tuple[str, ...],
    devices: tuple[str, ...],
    memory_limit: str | None,
    cache_dir: Path | None,
    threads: int | None,
    log_level: str,
) -> None:
    """Serve this host's devices to a main hermesd over llama.cpp RPC (no authentication: a
    private network or a tunnel only)."""
    from hermesd.runtime.rpc import has_rpc
    from hermesd.runtime.rpc_worker import (
        ServerOptions,
        check_listen,
        free_loopback_port,
        parse_allow_from,
        run_worker,
    )

    setup_logging(log_level)
    try:
        address = check_listen(listen)
        networks = parse_allow_from(allow_from)
    except HermesdError as exc:
        fail(str(exc))
    limit = parse_mib(memory_limit) if memory_limit else None
    names = tuple(n.strip() for d in devices for n in d.split(",") if n.strip())
    if not has_rpc():
        fail(
            "the installed llama.cpp was built without RPC; rebuild it with `hermesd setup-gpu` (GPU host) "
            "or `hermesd setup-gpu --cpu` (CPU-only host)"
        )
    from hermesd.runtime.engine.llamacpp import default_threads  # loads llama.cpp

    options = ServerOptions(
        port=free_loopback_port(),
        cache_dir=cache_dir or default_cache_dir(),
        threads=threads or default_threads(),
        devices=names,
        memory_limit_mib=limit,
    )
    try:
        code = run_worker(address, networks, options)
    except HermesdError as exc:
        fail(str(exc))
    except OSError as exc:  # the relay could not bind (address not on this host, port taken)
        fail(f"cannot listen on {listen}: {exc.strerror or exc}")
    sys.exit(code)
