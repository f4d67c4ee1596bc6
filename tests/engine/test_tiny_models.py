"""The tiny test models: built, loaded by llama.cpp, and answering every chat of the behaviour table
exactly under greedy decoding, in F32 and in Q8_0."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import gguf
import pytest

from tests.fixtures import tiny_models
from tests.fixtures.behaviours import BEHAVIOURS, BUDGET_BEHAVIOURS, BY_NAME, FORCED_THINK_CLOSE
from tests.fixtures.llama_greedy import LlamaRunner
from tests.fixtures.tiny_train import KINDS, SPECIAL_TOKENS, Kind, render_prompt, think_prefix

pytestmark = pytest.mark.slow  # the first run trains two models (about 15-30 s each)

MODELS = [(kind, quant) for kind in ("qwen3", "llama") for quant in ("F32", "Q8_0")]


@pytest.fixture(scope="module", params=MODELS, ids=[f"{k}-{q}" for k, q in MODELS])
def runner(request: pytest.FixtureRequest) -> Iterator[tuple[str, LlamaRunner]]:
    kind, quant = request.param
    with LlamaRunner(tiny_models.tiny_model(kind, quant)) as r:
        yield kind, r


@pytest.mark.parametrize("name", [b.name for b in BEHAVIOURS])
def test_behaviour_is_reproduced_exactly(runner: tuple[str, LlamaRunner], name: str) -> None:
    kind, r = runner
    b = BY_NAME[name]
    prompt = r.tokenize(render_prompt(kind, b.messages, b.options))
    out, ended = r.greedy(prompt, max_tokens=len(r.tokenize(b.reply)) + 20)
    assert r.detokenize(out) == b.reply
    assert ended, "the reply must end with the end-of-turn token"


@pytest.mark.parametrize("name", BUDGET_BEHAVIOURS)
def test_answer_follows_a_forced_close_at_every_cut(runner: tuple[str, LlamaRunner], name: str) -> None:
    kind, r = runner
    b = BY_NAME[name]
    prompt = r.tokenize(render_prompt(kind, b.messages, b.options))
    thought, close = think_prefix(b, r.tokenize), r.tokenize(FORCED_THINK_CLOSE)
    wrong = {}
    for cut in range(1, len(thought) + 1):
        out, ended = r.greedy(prompt + thought[:cut] + close, max_tokens=40)
        if not ended or r.detokenize(out) != b.answer:
            wrong[cut] = r.detokenize(out)
    assert wrong == {}


SAMPLES = [
    "Hello world! How are   you?\n\n  Fine.\tTabs too.",
    "Numbers 12345 and 3.14159, code: def f(x): return x**2  # done",
    "Unicode: café, naïve, 日本語, emoji 🙂 and ’quotes’",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\nhmm\n</think>\nHello<|im_end|>",
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nX<|eot_id|>",
    '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call><tool_response>\nok\n</tool_response>',
    "unfinished <think tag and <|im_end|>trailing",
]


@pytest.mark.parametrize("kind", ["qwen3", "llama"])
def test_llama_cpp_tokenizes_like_the_hf_tokenizer(kind: Kind) -> None:
    from tokenizers import Tokenizer

    hf = Tokenizer.from_str(json.dumps(tiny_models.tiny_tokenizer_json(kind)))
    texts = SAMPLES + [render_prompt(kind, b.messages, b.options) + b.reply for b in BEHAVIOURS]
    with LlamaRunner(tiny_models.tiny_model(kind), vocab_only=True) as r:
        for text in texts:
            ids = r.tokenize(text)
            assert ids == hf.encode(text).ids, text
            assert r.detokenize(ids, special=True) == text


@pytest.mark.parametrize("kind", ["qwen3", "llama"])
def test_special_tokens_and_end_of_turn(kind: Kind) -> None:
    with LlamaRunner(tiny_models.tiny_model(kind), vocab_only=True) as r:
        for text, control in SPECIAL_TOKENS:
            ids = r.tokenize(text)
            assert len(ids) == 1, text
            # CONTROL tokens are hidden in plain detokenization; <think> and <tool_call> are not.
            assert r.detokenize(ids) == ("" if control else text)
            assert r.token_text(ids[0]) == text
        eog = r.tokenize(KINDS[kind].eog)[0]
        assert r.is_eog(eog)
        assert not r.is_eog(r.tokenize("</think>")[0])


def _kv(path: Path) -> dict[str, object]:
    reader = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}


@pytest.mark.parametrize("kind", ["qwen3", "llama"])
def test_names_and_templates(kind: Kind) -> None:
    hermes = _kv(tiny_models.tiny_model(kind, "Q8_0"))
    assert (hermes["general.name"], hermes["general.basename"]) == ("Hermes 4 Tiny", "Hermes-4-Tiny")
    assert hermes["general.architecture"] == kind
    assert hermes["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0
    assert "tokenizer.chat_template" not in hermes

    other = _kv(tiny_models.tiny_model(kind, hermes=False))
    assert "Hermes" not in str(other["general.name"])
    assert other["tokenizer.chat_template"] == tiny_models.DEFAULT_TEMPLATES[kind]

    mine = _kv(tiny_models.tiny_model(kind, hermes=False, chat_template="{{ 'x' }}"))
    assert mine["tokenizer.chat_template"] == "{{ 'x' }}"


def test_build_key_is_stable_and_per_kind() -> None:
    assert tiny_models.build_key("qwen3") == tiny_models.build_key("qwen3")
    assert tiny_models.build_key("qwen3") != tiny_models.build_key("llama")


def test_unknown_kind_or_quant_is_refused() -> None:
    with pytest.raises(ValueError, match="mamba"):
        tiny_models.tiny_model("mamba")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Q4_K"):
        tiny_models.tiny_model("qwen3", "Q4_K")  # type: ignore[arg-type]


def test_two_processes_writing_one_variant_agree(tmp_path: Path) -> None:
    # Copy the trained weights into a private cache, then race two processes to write a variant.
    trained = tiny_models.trained_dir("qwen3")
    shutil.copytree(trained, tmp_path / trained.name, ignore=shutil.ignore_patterns("*.gguf", ".lock"))
    code = (
        "from tests.fixtures.tiny_models import tiny_model\n"
        "print(tiny_model('qwen3', 'Q8_0', hermes=False, chat_template='race'))\n"
    )
    env = {**os.environ, tiny_models.CACHE_ENV: str(tmp_path)}
    root = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=root, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    paths = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert [p.returncode for p in procs] == [0, 0]
    assert len(paths) == 1
    (path,) = paths
    assert Path(path).parent.parent == tmp_path
    assert [p.name for p in Path(path).parent.glob("*.gguf")] == [Path(path).name]
    assert not list(Path(path).parent.glob(".*.tmp"))
    assert _kv(Path(path))["tokenizer.chat_template"] == "race"
