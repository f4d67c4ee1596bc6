"""`hermesd worker`: llama.cpp's RPC server on this host's devices, reachable only by the main
host(s) named with --allow-from.

llama.cpp's RPC server has no authentication, no allow-list, and known memory-safety bugs: anyone
who reaches its port can read and write the worker's memory. So it listens on a loopback port only,
and the address the main hosts use belongs to a small relay here that
  - refuses to listen on a wildcard or public address (loopback or a private address only),
  - closes every connection whose peer is not in --allow-from at once, and logs it,
  - pipes the allowed ones byte for byte to the RPC server, and answers hermesd's own info request
    (runtime/rpc.py) with the devices and their memory.
The RPC server runs in a child process (`python -m hermesd.runtime.rpc_worker`): its ggml call
never returns, and a crash there must end the worker (exit non-zero, so systemd restarts it),
not leave a relay that admits connections to nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ipaddress
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hermesd.runtime.errors import HermesdError
from hermesd.runtime.hardware import RemoteDevice
from hermesd.runtime.rpc import INFO_REQUEST, MIB, encode_info, rpc_library

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Carrier-grade NAT space: neither private nor global to `ipaddress`, and what Tailscale hands out.
SHARED_SPACE = ipaddress.ip_network("100.64.0.0/10")
# What the RPC server's own threads, stacks and compute buffers take beyond the tensors, on top of
# the limit, when the limit is enforced as the child's RLIMIT_DATA (CPU device).
CPU_LIMIT_HEADROOM_MIB = 512
PIPE_CHUNK = 1 << 20
PR_SET_PDEATHSIG = 1


class WorkerConfigError(HermesdError):
    """The worker's command line asks for something it refuses to do."""


def _ip(text: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise WorkerConfigError(
            f"{what} {text!r} is not an IP address (names are not accepted: a name can resolve to a "
            "public address)"
        ) from None


def _non_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_loopback or (ip.is_private and not ip.is_unspecified) or ip in SHARED_SPACE


def check_listen(address: str) -> tuple[str, int]:
    """--listen ADDR:PORT -> (ip, port), refusing wildcard and public addresses."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise WorkerConfigError(f"--listen {address!r} is not ADDR:PORT")
    ip = _ip(host, "--listen address")
    if ip.is_unspecified:
        raise WorkerConfigError(
            f"refusing to listen on {host}: a wildcard address reaches every network this host is on, "
            "and llama.cpp's RPC protocol has no authentication; name a loopback or private address"
        )
    if isinstance(ip, ipaddress.IPv6Address):
        raise WorkerConfigError(f"--listen {address}: llama.cpp's RPC client connects to IPv4 addresses only")
    if not _non_public(ip):
        raise WorkerConfigError(
            f"refusing to listen on {host}: it is a public address, and llama.cpp's RPC protocol has no "
            "authentication and known memory-safety bugs; use a private network or a tunnel "
            "(WireGuard, SSH) and listen on its address"
        )
    return str(ip), int(port)


def parse_allow_from(values: Sequence[str]) -> tuple[IPNetwork, ...]:
    """--allow-from ADDR[,ADDR...] (addresses or CIDR networks, loopback or private only)."""
    out: list[IPNetwork] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                net = ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise WorkerConfigError(f"--allow-from {part!r} is not an IP address or network") from None
            if (
                net.prefixlen == 0
                or not _non_public(net.network_address)
                or not _non_public(net.broadcast_address)
            ):
                raise WorkerConfigError(
                    f"--allow-from {part}: only loopback or private addresses may connect to a worker"
                )
            out.append(net)
    if not out:
        raise WorkerConfigError(
            "--allow-from is required: the address(es) of the main host(s) that may connect"
        )
    return tuple(out)


def allowed(peer: str, networks: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(peer.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


# -- the relay


class Relay:
    """The worker's listening socket: the allow-list, the info answer, and a byte pipe to the RPC
    server on loopback."""

    def __init__(
        self,
        networks: Sequence[IPNetwork],
        backend: tuple[str, int],
        devices: Sequence[RemoteDevice],
        version: str,
    ) -> None:
        self.networks = tuple(networks)
        self.backend = backend
        self.devices = tuple(devices)
        self.version = version
        self.refused = 0
        self.relayed = [0, 0]  # bytes to the RPC server, bytes back to the main host

    async def serve(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._client, host, port)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peer_ip = str(peer[0]) if peer else "?"
        if not allowed(peer_ip, self.networks):
            self.refused += 1
            log.warning("refused a connection from %s: not in --allow-from", peer_ip)
            _abort(writer)
            return
        _nodelay(writer)
        try:
            first = await reader.readexactly(1)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        if first == INFO_REQUEST[:1]:
            await self._answer_info(first, reader, writer)
            return
        try:
            b_reader, b_writer = await asyncio.open_connection(*self.backend)
        except OSError as exc:
            log.error("the RPC server on %s:%d is not answering: %s", *self.backend, exc)
            _abort(writer)
            return
        _nodelay(b_writer)
        log.info("main host %s connected", peer_ip)
        b_writer.write(first)
        self.relayed[0] += 1
        await asyncio.gather(
            _pipe(reader, b_writer, self.relayed, 0), _pipe(b_reader, writer, self.relayed, 1)
        )
        log.info("main host %s disconnected", peer_ip)

    async def _answer_info(
        self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            rest = await asyncio.wait_for(reader.readexactly(len(INFO_REQUEST) - 1), timeout=10)
            if first + rest == INFO_REQUEST:
                writer.write(encode_info(self.devices, self.version, (self.relayed[0], self.relayed[1])))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    transport.abort()


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: list[int], index: int
) -> None:
    """Copy until either side closes, then close the other: a main that went away frees the RPC
    server for the next one, and an RPC server that went away ends the main's connection."""
    try:
        while data := await reader.read(PIPE_CHUNK):
            count[index] += len(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        _abort(writer)


# -- the RPC server child


@dataclass(frozen=True)
class ServerOptions:
    port: int
    cache_dir: Path
    threads: int
    devices: tuple[str, ...] = ()
    memory_limit_mib: int | None = None


def child_command(options: ServerOptions) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "hermesd.runtime.rpc_worker",
        "--port",
        str(options.port),
        "--cache-dir",
        str(options.cache_dir),
        "--threads",
        str(options.threads),
    ]
    if options.devices:
        cmd += ["--device", ",".join(options.devices)]
    if options.memory_limit_mib is not None:
        cmd += ["--memory-limit-mib", str(options.memory_limit_mib)]
    return cmd


def start_server_process(
    options: ServerOptions,
) -> tuple[subprocess.Popen[bytes], tuple[RemoteDevice, ...], str]:
    """Start the child; it prints one JSON line with its devices (or an error) before serving.
    Returns the process, its devices, and its llama-cpp-python version."""
    proc = subprocess.Popen(child_command(options), stdout=subprocess.PIPE)
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode("utf-8", "replace").strip()
        if line.startswith("{"):
            body = json.loads(line)
            if "error" in body:
                proc.wait()
                raise WorkerConfigError(str(body["error"]))
            devices = tuple(RemoteDevice(**d) for d in body["devices"])
            return proc, devices, str(body.get("llama_cpp_python", ""))
    proc.wait()
    raise WorkerConfigError(f"the RPC server process exited with {proc.returncode} before it started")


def forward_output(proc: subprocess.Popen[bytes]) -> None:
    """The RPC server's own lines ("Accepted client connection", ...) into the worker's log."""
    assert proc.stdout is not None
    server_log = logging.getLogger("hermesd.rpc_server")
    for raw in proc.stdout:
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            server_log.info("%s", line)


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _choose_devices(g: Any, names: Sequence[str]) -> list[int]:
    """Device handles: the named ones, else every GPU, else the CPU (as llama.cpp's rpc-server)."""
    count = g.ggml_backend_dev_count()
    handles = [g.ggml_backend_dev_get(i) for i in range(count)]
    by_name = {g.ggml_backend_dev_name(h).decode(): h for h in handles}
    if names:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise WorkerConfigError(
                f"unknown device(s) {', '.join(unknown)}; this host has {', '.join(by_name)}"
            )
        return [by_name[n] for n in names]
    kinds = {h: g.ggml_backend_dev_type(h) for h in handles}
    gpus = [h for h in handles if kinds[h] in (1, 2)]
    return gpus or [h for h in handles if kinds[h] == 0][:1]


def _data_mib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) // 1024
    return 0


def _child_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="hermesd.runtime.rpc_worker")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--device", default="")
    parser.add_argument("--memory-limit-mib", type=int, default=None)
    args = parser.parse_args(argv)
    # die with the worker: a relay killed outright must not leave an RPC server behind
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    def say(body: dict[str, object]) -> None:
        sys.stdout.write(json.dumps(body) + "\n")
        sys.stdout.flush()

    try:
        import llama_cpp
        import llama_cpp.llama_cpp as ll

        from hermesd.runtime.engine.capabilities import _bind, _open_libggml

        ll.llama_backend_init()
        rpc = rpc_library()
        g = _bind(_open_libggml()[0])
        chosen = _choose_devices(g, [d for d in args.device.split(",") if d])
    except (HermesdError, OSError, AttributeError, ImportError) as exc:
        say({"error": str(exc)})
        return 2
    limit = args.memory_limit_mib
    if limit is None and any(g.ggml_backend_dev_type(h) == 0 for h in chosen):
        say(
            {
                "error": "lending the CPU needs --memory-limit (e.g. --memory-limit 48GiB): without it a "
                "main host could fill this host's RAM"
            }
        )
        return 2
    devices: list[dict[str, object]] = []
    for h in chosen:
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        g.ggml_backend_dev_memory(h, ctypes.byref(free), ctypes.byref(total))
        kind = "cpu" if g.ggml_backend_dev_type(h) == 0 else "gpu"
        total_mib, free_mib = total.value // MIB, free.value // MIB
        if limit is not None:
            total_mib, free_mib = min(total_mib, limit), min(free_mib, limit)
        name = g.ggml_backend_dev_name(h).decode()
        desc = (g.ggml_backend_dev_description(h) or b"").decode()
        devices.append(
            {
                "name": f"{name} ({desc})" if desc else name,
                "kind": kind,
                "memory_total_mib": total_mib,
                "memory_free_mib": free_mib,
            }
        )
    if limit is not None and all(d["kind"] == "cpu" for d in devices):
        # the CPU device allocates from this process's heap: cap it near the limit, so a main that
        # asks for more gets an allocation error instead of pushing this host into the OOM killer
        cap = (_data_mib() + limit + CPU_LIMIT_HEADROOM_MIB) * MIB
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    say({"devices": devices, "llama_cpp_python": str(getattr(llama_cpp, "__version__", ""))})
    array = (ctypes.c_void_p * len(chosen))(*chosen)
    endpoint = f"127.0.0.1:{args.port}".encode()
    rpc.ggml_backend_rpc_start_server(
        endpoint, str(args.cache_dir).encode(), args.threads, len(chosen), array
    )
    return 3  # it returns only when it could not listen or accept


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout_s: float = 60.0) -> None:
    """Until the RPC server accepts on its loopback port (a bare connect and close is harmless: it
    counts as a client that left)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise WorkerConfigError(
                f"the RPC server process exited with {proc.returncode} before it listened"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise WorkerConfigError(f"the RPC server did not listen on 127.0.0.1:{port} within {timeout_s:g} s")


def run_worker(listen: tuple[str, int], networks: Sequence[IPNetwork], options: ServerOptions) -> int:
    """Serve until SIGTERM/SIGINT (exit 0) or until the RPC server process dies (exit 1)."""
    import threading

    proc, devices, version = start_server_process(options)
    try:
        threading.Thread(target=forward_output, args=(proc,), name="rpc-server-log", daemon=True).start()
        wait_listening(proc, options.port)
        for d in devices:
            log.info(
                "device %s: %s, %d of %d MiB free", d.name, d.kind, d.memory_free_mib, d.memory_total_mib
            )
        relay = Relay(networks, ("127.0.0.1", options.port), devices, version)

        async def main() -> int:
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            server = await relay.serve(*listen)
            log.warning(
                "llama.cpp's RPC protocol has no authentication and no encryption: only %s may connect, "
                "and %s:%d must be on a private network or a tunnel (WireGuard, SSH)",
                ", ".join(str(n) for n in networks),
                *listen,
            )
            log.info(
                "worker listening on %s:%d for %s (RPC server on 127.0.0.1:%d, tensor cache %s)",
                *listen,
                ", ".join(str(n) for n in networks),
                options.port,
                options.cache_dir,
            )
            died = asyncio.ensure_future(asyncio.to_thread(proc.wait))
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({died, stopped}, return_when=asyncio.FIRST_COMPLETED)
            server.close()
            if died.done():
                log.error("the RPC server process exited with %s", proc.returncode)
                return 1
            proc.terminate()  # before asyncio.run ends: it waits for the thread in proc.wait()
            try:
                await asyncio.wait_for(asyncio.shield(died), timeout=10)
            except TimeoutError:
                proc.kill()
                await died
            return 0

        return asyncio.run(main())
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(_child_main(sys.argv[1:]))
