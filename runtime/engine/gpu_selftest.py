"""Check a freshly built engine in a fresh process: `python -m hermesd.runtime.engine.gpu_selftest`.

`hermesd setup-gpu` runs it after installing a CUDA build (a new process, so the new libraries are the
ones loaded). It checks that the probe sees the expected GPUs, that a tiny GGUF (random weights,
written here with models/gguf_write.py) loads with every layer on the GPUs by llama.cpp's own account,
decodes 8 greedy tokens, and that its logits match a CPU load of the same file. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

STEPS = 8
PROMPT = [1, 17, 42, 99, 7]


def write_tiny_model(path: Path, *, seed: int = 0) -> Path:
    """A 2-layer Llama with a byte-level vocabulary and random weights (a few hundred KiB), written
    with the `gguf` package's writer under llama.cpp's own tensor names."""
    import gguf

    dim, ff, heads, layers = 64, 128, 4, 2
    tokens = [*_byte_symbols(), "ab"]  # the 256 byte symbols of GPT-2's alphabet and one merge
    vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("hermesd GPU self-test")
    writer.add_context_length(256)
    writer.add_embedding_length(dim)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(dim // heads)
    writer.add_vocab_size(vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types([int(gguf.TokenType.NORMAL)] * vocab)
    writer.add_token_merges(["a b"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    # numpy shapes are (rows, columns) = (out, in); GGUF stores the reverse, as the writer handles
    writer.add_tensor("token_embd.weight", w(vocab, dim))
    writer.add_tensor("output_norm.weight", np.ones(dim, np.float32))
    writer.add_tensor("output.weight", w(vocab, dim))
    for i in range(layers):
        for name, shape in (
            ("attn_q", (dim, dim)),
            ("attn_k", (dim, dim)),
            ("attn_v", (dim, dim)),
            ("attn_output", (dim, dim)),
            ("ffn_gate", (ff, dim)),
            ("ffn_up", (ff, dim)),
            ("ffn_down", (dim, ff)),
        ):
            writer.add_tensor(f"blk.{i}.{name}.weight", w(*shape))
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(dim, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(dim, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values (tokenizers' ByteLevel alphabet)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    symbols, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def greedy(path: Path, gpu_layers: int) -> tuple[list[int], np.ndarray, dict[str, int]]:
    """(tokens, logits of every step, layers per device) of a greedy run."""
    import llama_cpp.llama_cpp as ll

    from hermesd.runtime.engine.capabilities import probe_capabilities
    from hermesd.runtime.engine.llama_model import LlamaModel, LlamaModelConfig, capture_log
    from hermesd.runtime.engine.load_report import parse_load_log

    names = [d.name for d in probe_capabilities().devices]
    with capture_log() as lines:
        model = LlamaModel(LlamaModelConfig(path, gpu_layers=gpu_layers))
    layers = parse_load_log(lines, names).layers
    params = ll.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = 64, 64, 64, 1
    ctx = ll.llama_init_from_model(model.handle, params)
    try:
        tokens, rows = list(PROMPT), []
        feed = list(PROMPT)
        for _ in range(STEPS):
            arr = (ll.llama_token * len(feed))(*feed)
            if ll.llama_decode(ctx, ll.llama_batch_get_one(arr, len(feed))) != 0:
                raise RuntimeError("llama_decode failed")
            logits = np.ctypeslib.as_array(ll.llama_get_logits_ith(ctx, -1), shape=(model.n_vocab,)).copy()
            rows.append(logits)
            nxt = int(np.argmax(logits))
            tokens.append(nxt)
            feed = [nxt]
    finally:
        ll.llama_free(ctx)
        model.close()
    return tokens[len(PROMPT) :], np.stack(rows), layers


def selftest(expect_gpus: int, tolerance: float = 1e-2) -> dict[str, Any]:
    from hermesd.runtime.engine.capabilities import probe_capabilities

    caps = probe_capabilities()
    result: dict[str, Any] = {"engine": caps.summary(), "ok": False}
    gpus = caps.gpu_devices
    if len(gpus) < expect_gpus:
        result["error"] = (
            f"the engine sees {len(gpus)} GPU(s), {expect_gpus} expected "
            f"(backends: {', '.join(caps.backends)})"
        )
        return result
    with tempfile.TemporaryDirectory(prefix="hermesd-selftest-") as tmp:
        path = write_tiny_model(Path(tmp) / "selftest.gguf")
        cpu_tokens, cpu_logits, _ = greedy(path, 0)
        result["cpu_tokens"] = cpu_tokens
        if not gpus:
            result["ok"] = True
            return result
        gpu_tokens, gpu_logits, layers = greedy(path, -1)
        on_cpu = layers.get("CPU", 0)
        diff = float(np.max(np.abs(gpu_logits - cpu_logits)))
        scale = float(np.max(np.abs(cpu_logits))) or 1.0
        result.update(gpu_tokens=gpu_tokens, layers=layers, max_logit_diff=diff)
        if on_cpu or not layers:
            result["error"] = f"not every layer was offloaded: {layers}"
        elif gpu_tokens != cpu_tokens or diff > tolerance * scale:
            result["error"] = (
                f"GPU and CPU disagree (tokens {gpu_tokens} vs {cpu_tokens}, max logit diff {diff:.4g})"
            )
        else:
            result["ok"] = True
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--expect-gpus", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        result = selftest(args.expect_gpus)
    except Exception as exc:  # reported as JSON: the caller shows it
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    _ = ctypes  # llama.cpp is loaded through ctypes by the modules above
    sys.exit(main())
