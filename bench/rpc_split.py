#!/usr/bin/env python3
"""What splitting a model over llama.cpp RPC workers costs (issue 18): decode tokens/s of one
stream on one host against the same model split over a main and two `hermesd worker`s, each in a
network namespace of its own joined by veth pairs and a bridge (tests/fixtures/netns.py; root
only), and the bytes per token that cross each worker's link (the relay's counters).

Layers go evenly over the three hosts (`serve --model FILE --worker ...`): the main's CPU runs the
first third, worker 1 the next, worker 2 the last third and the output layer.

    sudo python3 bench/rpc_split.py                     # tiny model (+ Gemma 3 270M if installed)
    sudo python3 bench/rpc_split.py --model X.gguf --max-tokens 256
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hermesd.runtime.rpc import INFO_REQUEST
from tests.e2e.server_process import ServerProcess, run_server
from tests.fixtures.netns import PORT, entered, private_network, run_worker

PROMPT = "Once upon a time"


def traffic(address: str) -> tuple[int, int]:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(INFO_REQUEST)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    relayed = json.loads(raw)["relayed"]
    return int(relayed["to_server"]), int(relayed["to_main"])


def decode_rate(server: ServerProcess, max_tokens: int) -> float:
    """Tokens/s between the first and the last streamed token (prompt processing left out)."""
    model = httpx.get(server.base_url + "/v1/models", timeout=10).json()["data"][0]["id"]
    body = {
        "model": model,
        "prompt": PROMPT,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    stamps: list[float] = []
    with httpx.stream("POST", server.base_url + "/v1/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                stamps.append(time.perf_counter())
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, action="append")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of the main and of each worker")
    args = ap.parse_args()
    if args.model:
        models = args.model
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench import default_models  # bench/ is not a package

        models = default_models(Path(tempfile.gettempdir()))
    flags = ("--parallel", "1", "--ctx", "2048", "--threads", str(args.threads))
    with tempfile.TemporaryDirectory() as tmp_name, private_network(["main", "w1", "w2"]) as hosts:
        tmp = Path(tmp_name)
        main_host = hosts["main"]
        with (
            run_worker(hosts["w1"], main_host.address, tmp, threads=args.threads) as w1,
            run_worker(hosts["w2"], main_host.address, tmp, threads=args.threads) as w2,
        ):
            workers = ("--worker", w1.address, "--worker", w2.address)
            for model in models:
                rates: dict[str, list[float]] = {}
                per_token: list[tuple[int, int]] = []
                with entered(main_host):
                    for case, extra in (("one host", ()), ("3 hosts", workers)):
                        folder = tmp / f"{model.stem}-{case.replace(' ', '-')}"
                        folder.mkdir()
                        with run_server(model, folder, *flags, *extra) as server:
                            decode_rate(server, 16)  # warm-up
                            rates[case] = []
                            for _ in range(args.repeat):
                                before = [traffic(w.address) for w in (w1, w2)] if extra else []
                                rates[case].append(decode_rate(server, args.max_tokens))
                                if extra:
                                    after = [traffic(w.address) for w in (w1, w2)]
                                    per_token = [
                                        ((a[0] - b[0]) // args.max_tokens, (a[1] - b[1]) // args.max_tokens)
                                        for a, b in zip(after, before, strict=True)
                                    ]
                alone, split = statistics.median(rates["one host"]), statistics.median(rates["3 hosts"])
                print(
                    f"{model.name}: one host {alone:.1f} tok/s, 3 hosts (veth) {split:.1f} tok/s "
                    f"({split / alone:.2f}x)"
                )
                for name, (to_w, to_m) in zip(("worker 1", "worker 2"), per_token, strict=True):
                    print(f"  {name} link: {to_w} B/token to the worker, {to_m} B/token back (port {PORT})")


if __name__ == "__main__":
    main()
