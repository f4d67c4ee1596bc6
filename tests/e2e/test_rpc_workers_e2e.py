"""One model across three hosts with llama.cpp RPC: a main and two `hermesd worker`s, each in a
network namespace of its own on a private network made here (tests/fixtures/netns.py).

The tiny model's 2 layers and output layer go one per host (layer 0 here, layer 1 on worker 1, the
output layer on worker 2), so every token crosses both links. Greedy answers must be byte-identical
to the same model on one host, with and without a LoRA adapter; a worker killed mid-stream ends the
stream with an error and the daemon with exit code 3; the workers refuse peers that are not the main
and public listen addresses.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.server_process import ServerProcess, hermesd_cmd, run_server
from tests.fixtures.netns import (
    PORT,
    Host,
    WorkerProcess,
    can_make_namespaces,
    entered,
    private_network,
    run_worker,
)
from tests.fixtures.tiny_models import tiny_model

PROMPTS = ["Hello there", "What is the capital of France?", "Write a haiku about the sea."]
SERVE_FLAGS = ("--parallel", "2", "--ctx", "1024", "--threads", "1")

_why = can_make_namespaces()
if _why is not None and os.environ.get("CI") != "true":
    pytestmark = pytest.mark.skip(reason=f"{_why} (CI runs these as root)")


@dataclass
class Cluster:
    hosts: dict[str, Host]
    workers: list[WorkerProcess]
    tmp: Path


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    if _why is not None:
        pytest.fail(f"CI must run the RPC worker tests: {_why}")
    with private_network(["main", "w1", "w2", "other"]) as hosts:
        allow = hosts["main"].address
        with run_worker(hosts["w1"], allow, tmp_path) as w1, run_worker(hosts["w2"], allow, tmp_path) as w2:
            yield Cluster(hosts, [w1, w2], tmp_path)


def _worker_flags(cluster: Cluster) -> list[str]:
    return [flag for w in cluster.workers for flag in ("--worker", w.address)]


def _answers(server: ServerProcess, model: str | None = None) -> list[str]:
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
    model = model or client.models.list().data[0].id
    out = []
    for prompt in PROMPTS:
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            temperature=0,
            max_tokens=48,
        )
        out.append(reply.choices[0].message.content or "")
    return out


def _zephyr_adapter(tmp: Path) -> Path:
    """A LoRA adapter for the tiny qwen3 model, trained a few steps (as tests/engine/test_gguf_lora.py)."""
    from tests.fixtures.tune_data import train_zephyr_lora, write_zephyr_adapter

    gguf = tiny_model("qwen3")
    (tmp / "lora").mkdir()
    model, bundle, _ = train_zephyr_lora(gguf, tmp / "lora", steps=40)
    bundle.close()
    adapter = tmp / "zephyr.gguf"
    write_zephyr_adapter(model, gguf, "qwen3", adapter)
    return adapter


def _with_adapter(server: ServerProcess, state: Path, adapter: Path) -> list[str]:
    from hermesd.models.gguf_validate import base_fingerprint
    from hermesd.models.store import AdapterStore

    manifest = {"base": {"fingerprint": base_fingerprint(tiny_model("qwen3"))}}
    AdapterStore(state).register("zephyr", adapter, manifest, replace=True)
    loaded = httpx.post(server.base_url + "/v1/adapters", json={"name": "zephyr"}, timeout=60)
    assert loaded.status_code == 200, loaded.text
    base = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x").models.list().data[0].id
    return _answers(server, f"{base.split(':')[0]}:zephyr")


def test_split_over_two_workers_answers_exactly_as_one_host(cluster: Cluster, tmp_path: Path) -> None:
    model = tiny_model("qwen3")
    adapter = _zephyr_adapter(tmp_path)
    (tmp_path / "alone").mkdir()
    (tmp_path / "split").mkdir()
    with run_server(model, tmp_path / "alone", *SERVE_FLAGS) as alone:
        expected = _answers(alone)
        expected_adapter = _with_adapter(alone, tmp_path / "alone" / "state", adapter)
    assert (
        expected_adapter != expected
    )  # the adapter changes the answers: the comparison below means something
    main = cluster.hosts["main"]
    with entered(main), run_server(model, tmp_path / "split", *SERVE_FLAGS, *_worker_flags(cluster)) as split:
        got = _answers(split)
        got_adapter = _with_adapter(split, tmp_path / "split" / "state", adapter)
        log = split.log()
    assert got == expected
    assert got_adapter == expected_adapter
    w1, w2 = (w.address for w in cluster.workers)
    # one layer per host: the load report names the workers' devices and what they hold
    assert f"RPC0 on worker {w1}: 1 layers" in log
    assert f"RPC1 on worker {w2}: 1 layers" in log
    assert "CPU: 1 layers" in log
    for worker in cluster.workers:
        assert f"main host {main.address} connected" in worker.log()


def test_a_worker_killed_mid_stream_ends_the_stream_with_an_error_and_the_daemon_exits(
    cluster: Cluster, tmp_path: Path
) -> None:
    model = tiny_model("qwen3")
    with (
        entered(cluster.hosts["main"]),
        run_server(model, tmp_path, *SERVE_FLAGS, *_worker_flags(cluster)) as main,
    ):
        client = openai.OpenAI(base_url=main.base_url + "/v1", api_key="x", max_retries=0)
        stream = client.chat.completions.create(
            model=client.models.list().data[0].id,
            messages=[{"role": "user", "content": "Tell me a long story."}],
            temperature=0,
            max_tokens=900,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        chunks = iter(stream)
        first = next(chunks)
        assert first.choices
        victim = cluster.workers[1]
        victim.proc.kill()
        victim.proc.wait()
        finish = None
        with pytest.raises(openai.APIError) as error:
            for chunk in chunks:  # ends with the error event, not a hang and not a normal finish
                finish = chunk.choices[0].finish_reason if chunk.choices else finish
        assert finish is None
        assert "RPC" in str(error.value)
        health = httpx.get(main.base_url + "/health", timeout=10)
        assert health.status_code == 503 and "RPC" in health.json()["error"]
        assert main.proc.wait(timeout=60) == 3
        assert "exiting in" in main.log()


def test_a_peer_not_in_allow_from_is_refused(cluster: Cluster) -> None:
    from hermesd.runtime.rpc import WorkerError, query_worker

    worker = cluster.workers[0]
    with entered(cluster.hosts["main"]):
        assert query_worker(worker.address).devices[0].kind == "cpu"
    other = cluster.hosts["other"]
    with entered(other):
        with pytest.raises(WorkerError, match="closed the connection without answering"):
            query_worker(worker.address)
        with socket.create_connection((worker.host.address, PORT), timeout=10) as sock:
            sock.sendall(bytes([14]) + bytes(40))  # an RPC hello
            sock.settimeout(10)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(64) == b""  # closed at once, nothing relayed
    deadline = time.monotonic() + 30
    while (
        worker.log().count(f"refused a connection from {other.address}") < 2 and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert worker.log().count(f"refused a connection from {other.address}") == 2


@pytest.mark.parametrize("listen", ["0.0.0.0:50052", "8.8.8.8:50052"])
def test_a_worker_refuses_a_wildcard_or_public_listen_address(listen: str) -> None:
    result = subprocess.run(
        hermesd_cmd("worker", "--listen", listen, "--allow-from", "10.0.0.1"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"hermesd: error: refusing to listen on {listen.split(':')[0]}"
    )


def test_a_worker_that_is_down_at_start_is_one_line_naming_it(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused
        result = subprocess.run(
            hermesd_cmd(
                "serve",
                "--model",
                str(tiny_model("qwen3")),
                "--state-dir",
                str(tmp_path),
                "--worker",
                address,
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"hermesd: error: worker {address} is unreachable: Connection refused"]
