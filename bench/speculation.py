#!/usr/bin/env python3
"""Speculative decoding benchmark (issue 17): hermesd with and without n-gram lookup beside
llama-server without speculation and with each of its n-gram modes, in the same run; with
`--draft-model FILE` (or `self`: the model drafts for itself, which proves the plumbing, not the
speed) both also run with that draft model.

Three workloads, greedy, streamed /v1/completions, exactly max_tokens tokens (ignore_eos):
- edit: the prompt holds a 20-line Python file and asks for it again with one name changed, so
  most of the answer copies the prompt (what agents and coders ask for);
- open: an open-ended story that no server was asked for before (new stories every round), where
  lookup finds little (the cost of trying);
- repeat: the same stories every round (a client that asks again, as a retry or a regenerate at
  temperature 0 does), where lookup in earlier requests' text can draft whole replies.
Servers take turns, one run each per round on the same prompts (bench/bench.py's `load`), every
other round in the opposite order; medians
are printed, then hermesd's ratios and whether its greedy text is the same with and without
speculation (on prompts used nowhere else, so that no server has seen a measured prompt first).

    bash bench/run speculation                # tiny model + Gemma 3 270M Q4_K_M
    python3 bench/speculation.py --model X.gguf --concurrency 1 4 16
    python3 bench/speculation.py --model X.gguf --draft-model small.gguf --llama-modes
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (  # bench/ is not a package: its folder is on sys.path
    ROOT,
    RunStats,
    Server,
    Vocab,
    completion_body,
    default_models,
    fmt,
    load,
    start,
)

SOURCE = '''def load_settings(path, defaults=None):
    """Read a TOML settings file and merge it over the defaults."""
    import tomllib

    defaults = dict(defaults or {})
    with open(path, "rb") as handle:
        data = tomllib.load(handle)
    for key, value in data.items():
        if key not in defaults:
            raise KeyError(f"unknown setting {key!r} in {path}")
        if isinstance(defaults[key], bool) and not isinstance(value, bool):
            raise TypeError(f"{key} must be true or false")
        defaults[key] = value
    return defaults


def save_settings(path, settings):
    lines = [f"{key} = {value!r}" for key, value in sorted(settings.items())]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\\n".join(lines) + "\\n")
'''

PLACES = [
    "a land of glass",
    "a drowned city",
    "a desert of salt",
    "a floating market",
    "a northern fjord",
    "a clockwork forest",
    "a mountain monastery",
    "a river delta",
    "a lighthouse",
    "a buried library",
    "a frozen harbour",
    "a jungle temple",
    "a walled garden",
    "a volcanic island",
    "a canal town",
    "a moonlit steppe",
]
WHO = [
    "a baker",
    "an old dragon",
    "a lost sailor",
    "a clever fox",
    "two sisters",
    "a blind painter",
    "a giant",
    "a young witch",
    "a retired knight",
    "a talking crow",
    "a beekeeper",
    "a cartographer",
    "a shy robot",
    "a fisherman",
    "a queen",
    "a tailor",
]


def edit_prompt(n: int) -> str:
    return (
        f"Here is a Python file:\n\n```python\n{SOURCE}```\n\nHere is the same file with `load_settings` "
        f"renamed to `read_settings` (request {n}), unchanged otherwise:\n\n```python\n"
    )


def story_prompt(n: int) -> str:
    return f"Story {n}. Once upon a time, in {PLACES[n % 16]}, there lived {WHO[n // 16 % 16]}"


def prompts(workload: str, round_no: int) -> list[str]:
    """The 16 prompts of a workload in one round (every server gets the same)."""
    if workload == "edit":  # the reply copies the prompt, whichever round asks
        return [edit_prompt(i) for i in range(16)]
    if workload == "open":
        return [story_prompt(1000 + 16 * round_no + i) for i in range(16)]
    return [story_prompt(i) for i in range(16)]  # repeat


WORKLOADS = ["edit", "open", "repeat"]

# llama-server's n-gram speculation modes in the build bench/run installs
LLAMA_NGRAM_MODES = ["ngram-simple", "ngram-mod", "ngram-map-k", "ngram-cache"]


def configurations(args: argparse.Namespace, model: Path) -> list[tuple[str, str, list[str]]]:
    """(server, label, extra flags) for every server of the comparison."""
    out = [
        ("hermesd", "hermesd", list(args.hermesd_arg)),
        ("hermesd", "hermesd+ngram", [*args.hermesd_arg, "--ngram-lookup"]),
    ]
    draft = (
        None if args.draft_model is None else str(model if args.draft_model == "self" else args.draft_model)
    )
    if draft:
        out.append(("hermesd", "hermesd+draft", [*args.hermesd_arg, "--draft-model", draft]))
    out.append(("llama-server", "llama-server", []))
    for mode in args.llama_modes:
        out.append(("llama-server", f"llama-server {mode}", ["--spec-type", mode]))
    if draft:
        out.append(("llama-server", "llama-server draft", ["--model-draft", draft]))
    return out


async def greedy_text(server: Server, prompt: str, max_tokens: int) -> str:
    body = completion_body(server, prompt, max_tokens) | {"stream": False}
    body.pop("stream_options")
    async with httpx.AsyncClient(timeout=600) as http:
        r = await http.post(server.url + "/v1/completions", json=body)
        return str(r.json()["choices"][0]["text"])


def bench_model(model: Path, args: argparse.Namespace, log_dir: Path) -> None:
    print(f"\n=== {model.name}, threads={args.threads}, slots={args.slots}, max_tokens={args.max_tokens}")
    vocab = Vocab(model)
    results: dict[tuple[str, int, str], RunStats] = {}
    ratio_runs: dict[tuple[str, int, str], list[tuple[float, float]]] = {}
    with ExitStack() as stack:
        servers = [
            s
            for name, label, extra in configurations(args, model)
            if (s := stack.enter_context(start(name, model, args, log_dir, vocab, extra, label))) is not None
        ]
        labels = [s.name for s in servers]
        for server in servers:
            asyncio.run(load(server, 1, [story_prompt(900)], 8))  # warm-up
        hermesds = [s for s in servers if s.name.startswith("hermesd")]
        if len(hermesds) > 1 and hermesds[0].name == "hermesd":
            for workload, prompt in (("edit", edit_prompt(99)), ("open", story_prompt(999))):
                texts = [asyncio.run(greedy_text(s, prompt, args.max_tokens)) for s in hermesds]
                for s, text in zip(hermesds[1:], texts[1:], strict=True):
                    same = text == texts[0]
                    print(f"  {workload}: hermesd's greedy text identical with and without {s.name}: {same}")
        for workload in args.workloads:
            for c in args.concurrency:
                runs: dict[str, list[RunStats]] = {s.name: [] for s in servers}
                t0 = time.monotonic()
                while len(runs[labels[0]]) < args.repeat or (
                    time.monotonic() - t0 < args.min_seconds * len(servers) and len(runs[labels[0]]) < 15
                ):
                    round_no = len(runs[labels[0]])
                    batch = prompts(workload, round_no)
                    # every other round in the opposite order, so that a drift of the machine
                    # within a round (rounds of one server here vary by up to 15 %) favours neither
                    # of two servers that follow each other
                    for server in servers if round_no % 2 == 0 else servers[::-1]:
                        runs[server.name].append(asyncio.run(load(server, c, batch, args.max_tokens)))
                for label, rs in runs.items():
                    results[workload, c, label] = sorted(rs, key=lambda r: r.aggregate)[len(rs) // 2]
                    ratio_runs[workload, c, label] = [(r.per_stream, r.aggregate) for r in rs]
    print(f"\n{'workload':8} {'conc':>4} {'server':28} {'tok/s/stream':>12} {'aggregate':>10} {'errors':>6}")
    for (workload, c, label), s in results.items():
        print(f"{workload:8} {c:>4} {label:28} {fmt(s.per_stream):>12} {fmt(s.aggregate):>10} {s.errors:>6}")
    print("\nratios (median over rounds run back to back; decode per stream at 1, aggregate at >1)")
    for workload in args.workloads:
        for c in args.concurrency:
            modes = [label for label in labels if label.startswith("llama-server ngram")]
            best = max(modes, key=lambda m: results[workload, c, m].aggregate, default=None)
            pairs = [("hermesd+ngram", "hermesd"), ("hermesd+ngram", "llama-server")]
            pairs.append(("hermesd", "llama-server"))
            if best:
                pairs.append(("hermesd+ngram", best))
            if "hermesd+draft" in labels:
                pairs += [("hermesd+draft", "hermesd"), ("hermesd+draft", "llama-server draft")]
            shown = [f"{a} / {b} {fmt(_ratio(ratio_runs, workload, c, a, b), 2)}" for a, b in pairs]
            print(f"  {workload:5} conc {c:>2}: " + ", ".join(shown))


def _ratio(
    runs: dict[tuple[str, int, str], list[tuple[float, float]]], workload: str, c: int, a: str, b: str
) -> float:
    """Median over rounds of a's figure over b's: decode per stream at 1 stream, aggregate above."""
    pa, pb = runs.get((workload, c, a)), runs.get((workload, c, b))
    if not pa or not pb:
        return float("nan")
    pick = 0 if c == 1 else 1
    return statistics.median(x[pick] / y[pick] for x, y in zip(pa, pb, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, action="append")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--llama-modes", nargs="*", default=LLAMA_NGRAM_MODES)
    ap.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=WORKLOADS)
    ap.add_argument("--hermesd-arg", action="append", default=[])
    ap.add_argument("--draft-model", default=None, help="a draft GGUF for both servers, or 'self'")
    args = ap.parse_args()
    cache = ROOT / "bench" / ".cache"
    cache.mkdir(parents=True, exist_ok=True)
    for model in args.model or default_models(cache):
        bench_model(model, args, cache)


if __name__ == "__main__":
    main()
