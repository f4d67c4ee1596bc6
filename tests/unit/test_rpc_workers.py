"""RPC workers without llama.cpp: the address policy, the relay's allow-list and info answer, the
worker query, the watch, the stopgap layer split and the load report's remote devices."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from hermesd.runtime.engine.load_report import describe, parse_load_log
from hermesd.runtime.hardware import RemoteDevice, Worker
from hermesd.runtime.rpc import (
    INFO_REQUEST,
    WorkerError,
    WorkerWatch,
    decode_info,
    encode_info,
    even_split,
    query_worker,
    split_address,
)
from hermesd.runtime.rpc_worker import Relay, WorkerConfigError, allowed, check_listen, parse_allow_from

DEVICES = (RemoteDevice("CPU (Xeon)", "cpu", 2048, 1900),)


@pytest.mark.parametrize(
    ("listen", "refused_because"),
    [
        ("127.0.0.1:50052", None),
        ("10.20.30.40:50052", None),
        ("192.168.1.5:1", None),
        ("172.16.0.9:50052", None),
        ("100.100.1.2:50052", None),  # Tailscale's carrier-grade NAT space
        ("0.0.0.0:50052", "wildcard"),
        ("[::]:50052", "wildcard"),
        ("8.8.8.8:50052", "public"),
        ("1.2.3.4:50052", "public"),
        ("worker.example:50052", "not an IP address"),
        ("10.0.0.1", "not ADDR:PORT"),
        ("10.0.0.1:0", "not ADDR:PORT"),
        ("10.0.0.1:70000", "not ADDR:PORT"),
        ("[fd00::1]:50052", "IPv4"),
    ],
)
def test_listen_address_policy(listen: str, refused_because: str | None) -> None:
    if refused_because is None:
        host, port = check_listen(listen)
        assert f"{host}:{port}" == listen
    else:
        with pytest.raises(WorkerConfigError, match=refused_because):
            check_listen(listen)


@pytest.mark.parametrize(
    ("values", "refused_because"),
    [
        (["10.0.0.1"], None),
        (["10.0.0.1,10.0.0.2", "192.168.0.0/24"], None),
        ([], "required"),
        ([""], "required"),
        (["0.0.0.0/0"], "only loopback or private"),
        (["8.8.8.8"], "only loopback or private"),
        (["10.0.0.0/7"], "only loopback or private"),  # reaches past 10/8 into public space
        (["main-host"], "not an IP address"),
    ],
)
def test_allow_from_policy(values: list[str], refused_because: str | None) -> None:
    if refused_because is None:
        assert parse_allow_from(values)
    else:
        with pytest.raises(WorkerConfigError, match=refused_because):
            parse_allow_from(values)


def test_allowed_peers() -> None:
    nets = parse_allow_from(["10.0.0.1", "192.168.7.0/24"])
    assert allowed("10.0.0.1", nets) and allowed("192.168.7.200", nets)
    assert allowed("::ffff:10.0.0.1", nets)  # an IPv4 peer seen through a dual-stack socket
    assert not allowed("10.0.0.2", nets) and not allowed("127.0.0.1", nets) and not allowed("junk", nets)


def test_worker_address_must_be_host_port() -> None:
    assert split_address("10.0.0.2:50052") == ("10.0.0.2", 50052)
    for bad in ("10.0.0.2", "10.0.0.2:x", ":50052", "[fd00::1]:50052"):
        with pytest.raises(WorkerError):
            split_address(bad)


def test_info_round_trip_and_garbage() -> None:
    worker, version = decode_info("10.0.0.2:1", encode_info(DEVICES, "0.3.36"))
    assert worker == Worker("10.0.0.2:1", DEVICES) and version == "0.3.36"
    for raw in (b"nonsense", b'{"devices": [{"name": "x"}]}', b'{"devices": []}'):
        with pytest.raises(WorkerError, match=r"10\.0\.0\.2:1"):
            decode_info("10.0.0.2:1", raw)


@pytest.mark.parametrize(
    ("remote", "gpus", "n_layer", "expected"),
    [
        (2, 0, 2, (2, (1.0, 1.0))),  # 3 units (2 layers + output) over 2 workers and this CPU
        (1, 0, 7, (4, (4.0,))),  # 8 units: 4 here (the first layers), 4 on the worker
        (2, 0, 9, (6, (3.0, 3.0))),
        (2, 0, 10, (7, (3.0, 4.0))),  # the last device in llama.cpp's order takes the extra unit
        (1, 2, 5, (6, (2.0, 2.0, 2.0))),  # local GPUs take this host's share: everything offloaded
    ],
)
def test_even_split(remote: int, gpus: int, n_layer: int, expected: tuple[int, tuple[float, ...]]) -> None:
    assert even_split(remote, gpus, n_layer) == expected
    layers, split = expected
    assert sum(split) == (layers if gpus == 0 else n_layer + 1)


def test_watch_reports_a_worker_after_consecutive_misses_only() -> None:
    answers = {"a:1": [True, False, True, False, False], "b:1": [True] * 5}

    def probe(address: str, _timeout: float) -> object:
        if not answers[address].pop(0):
            raise WorkerError(f"worker {address} is unreachable: refused")
        return None

    watch = WorkerWatch(["a:1", "b:1"], lambda _r: None, failures=2, probe=probe)
    missed: dict[str, int] = {}
    reasons = [watch.check(missed) for _ in range(5)]
    assert reasons[:4] == [None, None, None, None]
    assert reasons[4] == "RPC worker lost: worker a:1 is unreachable: refused"


# -- the relay, on loopback


async def _echo_backend() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@contextlib.asynccontextmanager
async def _relay(networks: list[str]) -> AsyncIterator[tuple[Relay, int]]:
    backend, backend_port = await _echo_backend()
    relay = Relay(parse_allow_from(networks), ("127.0.0.1", backend_port), DEVICES, "")
    server = await relay.serve("127.0.0.1", 0)
    try:
        yield relay, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        backend.close()


def _in_thread(fn: Callable[[], object]) -> asyncio.Future[object]:
    return asyncio.get_running_loop().run_in_executor(None, fn)


def test_relay_pipes_rpc_bytes_and_answers_the_info_request() -> None:
    async def main() -> None:
        async with _relay(["127.0.0.1"]) as (relay, port):
            address = f"127.0.0.1:{port}"
            worker = await _in_thread(lambda: query_worker(address, timeout=5))
            assert worker == Worker(f"127.0.0.1:{port}", DEVICES)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            payload = bytes([14]) + bytes(range(256)) * 64  # RPC_CMD_HELLO first, then anything
            writer.write(payload)
            got = await reader.readexactly(len(payload))
            writer.close()
            assert got == payload and relay.refused == 0
            assert relay.relayed == [len(payload), len(payload)]

    asyncio.run(main())


def test_relay_closes_a_peer_not_in_allow_from_at_once() -> None:
    async def main() -> None:
        async with _relay(["10.9.9.9"]) as (relay, port):
            address = f"127.0.0.1:{port}"
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(INFO_REQUEST)
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await reader.readexactly(1)
            assert relay.refused == 1
            with pytest.raises(WorkerError, match="closed the connection without answering"):
                await _in_thread(lambda: query_worker(address, timeout=5))

    asyncio.run(main())


def test_query_of_a_worker_that_is_down_names_it() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(WorkerError, match=f"worker 127.0.0.1:{port} is unreachable"):
            query_worker(f"127.0.0.1:{port}", timeout=5)


def test_load_report_shows_remote_devices_and_their_buffers() -> None:
    lines = [
        "llama_model_load_from_file_impl: using device RPC0 (10.0.0.2:50052) (unknown id) - 1900 MiB free",
        "llama_model_load_from_file_impl: using device RPC1 (10.0.0.3:50052) (unknown id) - 1900 MiB free",
        "load_tensors: layer   0 assigned to device CPU, is_swa = 0",
        "load_tensors: layer   1 assigned to device RPC0, is_swa = 0",
        "load_tensors: layer   2 assigned to device RPC1, is_swa = 0",
        "load_tensors: RPC0[10.0.0.2:50052] model buffer size =     2.00 MiB",
        "load_tensors: RPC0[10.0.0.3:50052] model buffer size =     3.00 MiB",
        "load_tensors:   CPU_Mapped model buffer size =     1.00 MiB",
    ]
    report = parse_load_log(lines, ["CPU"])
    assert report.layers == {"CPU": 1, "RPC0": 1, "RPC1": 1}
    assert {d: m["model"] // (1 << 20) for d, m in report.memory.items()} == {"RPC0": 2, "RPC1": 3, "CPU": 1}
    text = describe(report, ["CPU", "RPC"])
    assert "RPC0 on worker 10.0.0.2:50052: 1 layers, 2 MiB" in text
    assert "RPC1 on worker 10.0.0.3:50052: 1 layers, 3 MiB" in text


# -- the command line, the settings and the engine build


def test_worker_on_a_build_without_rpc_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import hermesd.runtime.rpc as rpc
    from hermesd.cli.worker import worker_command

    monkeypatch.setattr(rpc, "has_rpc", lambda: False)
    result = CliRunner().invoke(worker_command, ["--listen", "10.0.0.2:50052", "--allow-from", "10.0.0.1"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "hermesd: error: the installed llama.cpp was built without RPC; rebuild it with `hermesd setup-gpu` "
        "(GPU host) or `hermesd setup-gpu --cpu` (CPU-only host)"
    ]


def test_workers_from_flags_environment_and_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hermesd.server.settings import load_settings

    cfg = tmp_path / "hermesd.toml"
    cfg.write_text('worker = ["10.0.0.2:50052", "10.0.0.3:50052"]\n')
    assert load_settings({}, cfg).worker == ["10.0.0.2:50052", "10.0.0.3:50052"]
    monkeypatch.setenv("HERMESD_WORKER", "10.0.0.4:1, 10.0.0.5:2")
    assert load_settings({}, cfg).worker == ["10.0.0.4:1", "10.0.0.5:2"]
    assert load_settings({"worker": ["10.0.0.6:3"]}, cfg).worker == ["10.0.0.6:3"]


def test_engine_builds_carry_rpc(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hermesd.cli.setup_gpu import setup_gpu_command
    from hermesd.runtime.engine.build import BuildOptions

    assert BuildOptions(rpc=True).cmake_args() == ["-DGGML_CUDA=off", "-DGGML_RPC=on"]
    assert BuildOptions(cuda=True, rpc=True).cmake_args() == ["-DGGML_CUDA=on", "-DGGML_RPC=on"]
    both = BuildOptions(rpc=True, cmake_flags=("-DGGML_RPC=on",)).cmake_args()
    assert both.count("-DGGML_RPC=on") == 1
    result = CliRunner().invoke(setup_gpu_command, ["--cpu", "--dry-run", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "with CPU and RPC" in result.output
    assert 'CMAKE_ARGS="-DGGML_CUDA=off -DGGML_RPC=on"' in result.output
