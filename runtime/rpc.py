"""llama.cpp RPC workers seen from the main host: ask a worker what it offers, register it with
ggml before the model loads, and notice when it is gone.

A worker is `hermesd worker` on another host (runtime/rpc_worker.py): llama.cpp's RPC server on a
loopback port behind a relay that admits only the main host(s). Besides the RPC stream, the relay
answers one hermesd request, `INFO_REQUEST`, with a JSON line describing its devices. The RPC
protocol has no device names, kinds or memory limits, and the RPC server serves one client at a
time, so this side channel is also how the main probes a worker while it is connected.

How ggml fails matters here. Every RPC error in ggml-rpc.cpp (a refused connection, a short read, a
worker that died mid-step) ends in `GGML_ABORT`, which calls `abort()` after an optional callback.
So: workers are queried over the side channel before ggml ever connects to them (a worker down at
start-up is one error line, not an abort), and `AbortGuard` installs ggml's abort callback, reports
an RPC failure to the engine and parks the failing thread instead of returning into `abort()`. The
engine then ends its streams with an error event and the daemon exits non-zero (cli/serve.py): the
model's remote buffers belong to a dead connection and cannot even be freed, so no reload in place.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from hermesd.runtime.errors import HermesdError
from hermesd.runtime.hardware import RemoteDevice, Worker

log = logging.getLogger(__name__)

# The first byte of every RPC connection is RPC_CMD_HELLO (14); 'H' (72) is no RPC command, so the
# relay tells the two apart from the first byte.
INFO_REQUEST = b"HERMESD-WORKER-INFO\n"
INFO_MAX_BYTES = 64 * 1024
DEFAULT_TIMEOUT_S = 5.0
MIB = 1024 * 1024


class WorkerError(HermesdError):
    """A worker cannot be used: unreachable, not a hermesd worker, or a different llama.cpp."""


class RpcUnavailable(HermesdError):
    """The installed llama.cpp was built without the RPC backend."""


def split_address(address: str) -> tuple[str, int]:
    """ "HOST:PORT" -> (host, port). ggml splits an endpoint at its first ':', so IPv6 literals
    cannot be used; say so instead of letting ggml abort on them."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise WorkerError(f"worker address {address!r} is not HOST:PORT")
    if ":" in host or host.startswith("["):
        raise WorkerError(
            f"worker address {address!r}: llama.cpp's RPC client takes IPv4 addresses or names only"
        )
    return host, int(port)


# -- the side channel (both ends use these two functions)


def encode_info(
    devices: Sequence[RemoteDevice], llama_cpp_version: str, relayed: tuple[int, int] = (0, 0)
) -> bytes:
    """`relayed`: the bytes the worker's relay has carried to its RPC server and back, so far (what
    the split costs on the wire: bench/rpc_split.py)."""
    body = {
        "llama_cpp_python": llama_cpp_version,
        "devices": [
            {
                "name": d.name,
                "kind": d.kind,
                "memory_total_mib": d.memory_total_mib,
                "memory_free_mib": d.memory_free_mib,
            }
            for d in devices
        ],
        "relayed": {"to_server": relayed[0], "to_main": relayed[1]},
    }
    return json.dumps(body).encode() + b"\n"


def decode_info(address: str, raw: bytes) -> tuple[Worker, str]:
    """The worker's answer -> (Worker, its llama-cpp-python version)."""
    try:
        body = json.loads(raw)
        devices = tuple(
            RemoteDevice(
                name=str(d["name"]),
                kind="cpu" if d["kind"] == "cpu" else "gpu",
                memory_total_mib=int(d["memory_total_mib"]),
                memory_free_mib=int(d["memory_free_mib"]),
            )
            for d in body["devices"]
        )
        version = str(body.get("llama_cpp_python", ""))
    except (ValueError, KeyError, TypeError) as exc:
        raise WorkerError(
            f"worker {address} answered something that is not a hermesd worker's reply ({exc})"
        ) from None
    if not devices:
        raise WorkerError(f"worker {address} offers no devices")
    return Worker(address=address, devices=devices), version


def query_worker(address: str, timeout: float = DEFAULT_TIMEOUT_S) -> Worker:
    """Ask a live `hermesd worker` for its devices and their free and total memory."""
    worker, version = _query(address, timeout)
    mine = _llama_cpp_version()
    if mine and version and version != mine:
        raise WorkerError(
            f"worker {address} runs llama-cpp-python {version}, this host {mine}: the RPC protocol "
            "changes between versions; install the same version on both"
        )
    return worker


def _query(address: str, timeout: float) -> tuple[Worker, str]:
    host, port = split_address(address)
    chunks: list[bytes] = []
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(INFO_REQUEST)
            size = 0
            while size < INFO_MAX_BYTES:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if chunk.endswith(b"\n"):
                    break
    except TimeoutError:
        raise WorkerError(f"worker {address} did not answer within {timeout:g} s") from None
    except ConnectionResetError:  # the relay resets a peer it refuses
        chunks.clear()
    except OSError as exc:
        raise WorkerError(f"worker {address} is unreachable: {exc.strerror or exc}") from None
    raw = b"".join(chunks)
    if not raw:
        raise WorkerError(
            f"worker {address} closed the connection without answering (not a `hermesd worker`, or "
            "this host is not in its --allow-from list)"
        )
    return decode_info(address, raw)


def query_workers(addresses: Iterable[str], timeout: float = DEFAULT_TIMEOUT_S) -> tuple[Worker, ...]:
    return tuple(query_worker(a, timeout) for a in addresses)


def _llama_cpp_version() -> str:
    try:
        import llama_cpp
    except ImportError:
        return ""
    return str(getattr(llama_cpp, "__version__", ""))


# -- ggml


def ggml_library(stem: str) -> ctypes.CDLL:
    """A ggml shared library of the loaded llama.cpp (libggml-base, libggml-rpc, ...)."""
    import llama_cpp.llama_cpp

    from hermesd.runtime.engine.capabilities import loaded_library

    path = loaded_library(stem)
    if path is None:
        import llama_cpp

        candidates = sorted((Path(llama_cpp.__file__).parent / "lib").glob(f"{stem}.*"))
        if not candidates:
            raise RpcUnavailable(
                "the installed llama.cpp has no RPC backend; build one with `hermesd setup-gpu` "
                "(GPU hosts) or `hermesd setup-gpu --cpu` (CPU-only hosts)"
            )
        path = str(candidates[0])
    return ctypes.CDLL(path)


def rpc_library() -> Any:
    lib = ggml_library("libggml-rpc")
    p = ctypes.c_void_p
    lib.ggml_backend_rpc_add_server.restype = p
    lib.ggml_backend_rpc_add_server.argtypes = [ctypes.c_char_p]
    lib.ggml_backend_rpc_start_server.restype = None
    lib.ggml_backend_rpc_start_server.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_size_t,
        ctypes.POINTER(p),
    ]
    return lib


def has_rpc() -> bool:
    try:
        rpc_library()
    except (RpcUnavailable, OSError, AttributeError):
        return False
    return True


_registered: dict[str, int] = {}  # endpoint -> devices; ggml's registry is per process too
_register_lock = threading.Lock()


def add_workers(addresses: Sequence[str], timeout: float = DEFAULT_TIMEOUT_S) -> tuple[Worker, ...]:
    """Query every worker (so one that is down is a WorkerError naming it, never a ggml abort),
    then register their devices with ggml, in this order, before a model loads. llama.cpp puts
    RPC devices first in a model's device list, in registration order. Idempotent per address."""
    workers = query_workers(addresses, timeout)
    lib = rpc_library()
    base = ggml_library("libggml")
    base.ggml_backend_register.restype = None
    base.ggml_backend_register.argtypes = [ctypes.c_void_p]
    base.ggml_backend_reg_dev_count.restype = ctypes.c_size_t
    base.ggml_backend_reg_dev_count.argtypes = [ctypes.c_void_p]
    ABORT_GUARD.install()
    with _register_lock:
        for worker in workers:
            if worker.address in _registered:
                continue
            reg = lib.ggml_backend_rpc_add_server(worker.address.encode())
            if not reg:
                raise WorkerError(f"worker {worker.address} offers no devices to llama.cpp")
            base.ggml_backend_register(reg)
            _registered[worker.address] = int(base.ggml_backend_reg_dev_count(reg))
            log.info(
                "worker %s: %s",
                worker.address,
                ", ".join(
                    f"{d.name} ({d.kind}, {d.memory_free_mib} of {d.memory_total_mib} MiB free)"
                    for d in worker.devices
                ),
            )
    return workers


# -- losing a worker


class AbortGuard:
    """ggml's abort callback: an RPC failure is reported to the listeners and the failing thread is
    parked (it never returns into abort()); any other ggml abort goes on to abort() as before."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[str], None]] = []
        self._callback: Any = None
        self._lock = threading.Lock()
        self._park = threading.Event()  # never set

    def listen(self, listener: Callable[[str], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def forget(self, listener: Callable[[str], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def install(self) -> None:
        with self._lock:
            if self._callback is not None:
                return
            base = ggml_library("libggml-base")
            callback_type = ctypes.CFUNCTYPE(None, ctypes.c_char_p)
            base.ggml_set_abort_callback.restype = ctypes.c_void_p
            base.ggml_set_abort_callback.argtypes = [callback_type]
            self._callback = callback_type(self._on_abort)
            base.ggml_set_abort_callback(self._callback)

    def _on_abort(self, message: bytes | None) -> None:
        text = (message or b"").decode("utf-8", "replace").strip()
        if not is_rpc_failure(text):
            os.write(2, f"ggml: {text}\n".encode())
            return  # ggml calls abort() next, as it would without this callback
        log.error("llama.cpp lost an RPC worker: %s", text)
        with self._lock:
            listeners = list(self._listeners)
        reason = text.split(": ", 1)[-1] if "ggml-rpc" in text else text  # no source path
        for listener in listeners:
            try:
                listener(reason)
            except Exception:  # a listener's bug must not let this thread reach abort()
                log.exception("worker-lost listener failed")
        self._park.wait()


def is_rpc_failure(message: str) -> bool:
    return "ggml-rpc" in message or "RPC server" in message or "Failed to connect to" in message


ABORT_GUARD = AbortGuard()


class WorkerWatch:
    """Probes the workers over the side channel while the engine runs: a worker that stops
    answering `failures` probes in a row is reported lost. This catches what ggml cannot see
    until the next step (a worker that died while idle) and what it may never see (a network
    that dropped packets instead of closing the connection)."""

    def __init__(
        self,
        addresses: Sequence[str],
        on_lost: Callable[[str], None],
        *,
        interval_s: float = 5.0,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        failures: int = 2,
        probe: Callable[[str, float], object] = _query,
    ) -> None:
        self.addresses = tuple(addresses)
        self._on_lost = on_lost
        self._interval = interval_s
        self._timeout = timeout_s
        self._failures = failures
        self._probe = probe
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hermesd-worker-watch", daemon=True)

    def start(self) -> None:
        if self.addresses:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def check(self, missed: dict[str, int]) -> str | None:
        """One round of probes; the reason a worker counts as lost, or None."""
        for address in self.addresses:
            try:
                self._probe(address, self._timeout)
            except WorkerError as exc:
                missed[address] = missed.get(address, 0) + 1
                if missed[address] >= self._failures:
                    return f"RPC worker lost: {exc}"
            else:
                missed[address] = 0
        return None

    def _run(self) -> None:
        missed: dict[str, int] = {}
        while not self._stop.wait(self._interval):
            reason = self.check(missed)
            if reason is not None:
                self._on_lost(reason)
                return


class WorkerLink:
    """An engine's workers: registered with ggml at creation (before its model loads), then
    watched; `on_lost` hears of a lost worker once, from ggml's abort path or from the watch."""

    def __init__(
        self, addresses: Sequence[str], on_lost: Callable[[str], None], watch_interval_s: float = 5.0
    ) -> None:
        self.workers = add_workers(addresses)
        self.addresses = tuple(addresses)
        self._on_lost = on_lost
        self._fired = threading.Lock()
        ABORT_GUARD.listen(self._ggml_failed)
        self._watch = WorkerWatch(addresses, self._lost, interval_s=watch_interval_s)

    def _ggml_failed(self, message: str) -> None:
        """ggml does not say which worker failed: name the ones that no longer answer."""
        down = []
        for address in self.addresses:
            try:
                _query(address, 2.0)
            except WorkerError:
                down.append(address)
        which = f"worker {', '.join(down)}" if down else "a worker"
        self._lost(f"RPC worker lost: llama.cpp lost its connection to {which} ({message})")

    def _lost(self, reason: str) -> None:
        if self._fired.acquire(blocking=False):
            self._on_lost(reason)

    def watch(self) -> None:
        self._watch.start()

    def close(self) -> None:
        self._watch.stop()
        ABORT_GUARD.forget(self._ggml_failed)


def even_split(remote_devices: int, local_gpus: int, n_layer: int) -> tuple[int, tuple[float, ...]]:
    """(n_gpu_layers, tensor_split) that spread a model's n_layer + 1 units (the output layer is
    one) evenly over the workers' devices and this host (its GPUs, or its CPU when it has none).

    TEMPORARY: for `serve --model FILE --worker ...`, which has no catalog variant to plan; the
    planner (runtime/planner.py, `engine_split`) places planned models by memory. This host's
    share is the first layers (llama.cpp keeps the layers below n_gpu_layers on the CPU)."""
    units = n_layer + 1
    devices = remote_devices + max(local_gpus, 1)
    base, extra = divmod(units, devices)
    # the last devices in llama.cpp's order get the extra units: the first (remote) ones stay lean
    shares = [base + (1 if i >= devices - extra else 0) for i in range(devices)]
    if local_gpus:
        return units, tuple(float(s) for s in shares)
    cpu_share = shares[-1]
    return units - cpu_share, tuple(float(s) for s in shares[:-1])
