"""Training data: the three input shapes, validation messages with line numbers, rendering with the
server's prompt format, the assistant-only loss mask, and the --max-seq-len policies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hermesd.models.chat import ChatOptions, Message
from hermesd.models.formats import STANDARD_PROMPT, THINKING_PROMPT, render_hermes
from hermesd.runtime.tune.data import Conversation, load_jsonl, split_train_eval
from hermesd.runtime.tune.render import ChatFormat, Row, build_rows
from hermesd.runtime.tune.summary import summarize
from tests.fixtures.tune_data import BAD_LINES, ZEPHYR_REASONING, write_jsonl, zephyr_records

SPECIALS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>")
CHATML = ChatFormat(name="hermes-chatml", bos_token="<|endoftext|>", eos_token="<|im_end|>")


class CharTokenizer:
    """One token per character, special tokens whole: prefixes and masks are easy to read back."""

    def __init__(self) -> None:
        self.special = {s: 1_000_000 + i for i, s in enumerate(SPECIALS)}
        self.eos_id = self.special["<|im_end|>"]

    def tokenize(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        out, i = [], 0
        while i < len(text):
            hit = next((s for s in SPECIALS if text.startswith(s, i)), None)
            if hit:
                out.append(self.special[hit])
                i += len(hit)
            else:
                out.append(ord(text[i]))
                i += 1
        return out

    def detokenize(self, ids: list[int]) -> str:
        names = {v: k for k, v in self.special.items()}
        return "".join(names.get(t) or chr(t) for t in ids)

    def is_eog(self, token: int) -> bool:
        return token == self.eos_id


TOK = CharTokenizer()


def rows_of(conv: Conversation, max_seq_len: int = 100_000, policy: Any = "drop") -> tuple[list[Row], list]:
    return build_rows(conv, CHATML, TOK, path="d.jsonl", max_seq_len=max_seq_len, policy=policy)


def trained_text(row: Row) -> str:
    return TOK.detokenize([t for t, m in zip(row.ids, row.trained, strict=True) if m])


# -- validation


@pytest.mark.parametrize(("case", "line", "expected"), BAD_LINES, ids=[c[0] for c in BAD_LINES])
def test_each_bad_line_is_reported_with_file_and_line_number(
    tmp_path: Path, case: str, line: str, expected: str
) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", [zephyr_records()[0], line])
    loaded = load_jsonl(path)
    assert len(loaded.conversations) == 1, case
    assert len(loaded.issues) == 1, loaded.issues
    issue = loaded.issues[0]
    assert issue.line == 2
    assert expected in issue.reason
    assert str(issue).startswith(f"{path}:2: ")


def test_all_problems_are_reported_at_once_and_blank_lines_skipped(tmp_path: Path) -> None:
    lines = [zephyr_records()[0], "", *[bad for _, bad, _ in BAD_LINES]]
    loaded = load_jsonl(write_jsonl(tmp_path / "d.jsonl", lines))
    assert [i.line for i in loaded.issues] == list(range(3, 3 + len(BAD_LINES)))
    assert len(loaded.conversations) == 1


def test_missing_file_is_an_issue_not_a_traceback(tmp_path: Path) -> None:
    loaded = load_jsonl(tmp_path / "nope.jsonl")
    assert loaded.issues and "cannot read" in loaded.issues[0].reason


# -- shapes and reasoning


def test_the_three_shapes_and_two_reasoning_spellings_give_the_same_chat(tmp_path: Path) -> None:
    records = [
        {
            "messages": [
                {"role": "user", "content": "Q"},
                {"role": "assistant", "content": "A", "reasoning_content": "R"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "Q"},
                {"role": "assistant", "content": "<think>\nR\n</think>\nA"},
            ]
        },
        {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "<think>R</think>A"}]},
        {"prompt": "Q", "completion": "A", "reasoning": "R"},
        {"prompt": "Q", "completion": "<think>R</think>\n\nA"},
    ]
    loaded = load_jsonl(write_jsonl(tmp_path / "d.jsonl", records))
    assert not loaded.issues
    expected = (
        Message(role="user", content="Q"),
        Message(role="assistant", content="A", reasoning_content="R"),
    )
    assert [c.messages for c in loaded.conversations] == [expected] * len(records)
    assert all(c.has_reasoning for c in loaded.conversations)


def test_sharegpt_system_and_tool_roles_and_openai_tool_calls(tmp_path: Path) -> None:
    records = [
        {
            "conversations": [
                {"from": "system", "value": "S"},
                {"from": "human", "value": "Q"},
                {"from": "gpt", "value": "A"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "w", "arguments": {"x": 1}}}
                    ],
                },
                {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
                {"role": "assistant", "content": "It is sunny."},
            ]
        },
    ]
    loaded = load_jsonl(write_jsonl(tmp_path / "d.jsonl", records))
    assert not loaded.issues
    first, second = loaded.conversations
    assert [m.role for m in first.messages] == ["system", "user", "assistant"]
    assert second.messages[1].tool_calls[0].arguments == '{"x": 1}'


# -- rendering and the loss mask


def test_direct_example_renders_like_the_server_with_thinking_off() -> None:
    conv = load_one({"prompt": "What?", "completion": "That."})
    [row], issues = rows_of(conv)
    assert not issues and not row.reasoning
    prompt = render_hermes(conv.messages[:1], ChatOptions(), "chatml").text
    assert STANDARD_PROMPT in prompt
    assert TOK.detokenize(list(row.ids)) == prompt + "That.<|im_end|>\n"
    assert list(row.ids[: len(TOK.tokenize(prompt))]) == TOK.tokenize(prompt)
    assert trained_text(row) == "That.<|im_end|>"  # the newline after the end token is not the model's


def test_reasoning_example_gets_the_thinking_prompt_and_keeps_its_trace() -> None:
    conv = load_one({"prompt": "What?", "completion": "That.", "reasoning": ZEPHYR_REASONING})
    [row], _ = rows_of(conv)
    assert row.reasoning
    prompt = render_hermes(conv.messages[:1], ChatOptions(thinking=True), "chatml").text
    assert THINKING_PROMPT in prompt
    assert TOK.detokenize(list(row.ids)).startswith(prompt)
    assert trained_text(row) == f"<think>\n{ZEPHYR_REASONING}\n</think>\nThat.<|im_end|>"


def test_direct_multi_turn_chat_is_one_row_with_two_trained_spans() -> None:
    conv = load_one(
        {
            "messages": [
                {"role": "user", "content": "one"},
                {"role": "assistant", "content": "first"},
                {"role": "user", "content": "two"},
                {"role": "assistant", "content": "second"},
            ]
        }
    )
    [row], _ = rows_of(conv)
    assert trained_text(row) == "first<|im_end|>second<|im_end|>"
    assert "<|im_start|>user\ntwo" in TOK.detokenize(list(row.ids))


def test_thinking_multi_turn_chat_splits_where_the_server_drops_earlier_reasoning() -> None:
    conv = load_one(
        {
            "messages": [
                {"role": "user", "content": "one"},
                {"role": "assistant", "content": "first", "reasoning_content": "r1"},
                {"role": "user", "content": "two"},
                {"role": "assistant", "content": "second", "reasoning_content": "r2"},
            ]
        }
    )
    first, second = rows_of(conv)[0]
    assert trained_text(first) == "<think>\nr1\n</think>\nfirst<|im_end|>"
    assert trained_text(second) == "<think>\nr2\n</think>\nsecond<|im_end|>"
    # In the second row the earlier turn is context, rewritten as the server sends it (reasoning dropped).
    assert "r1" not in TOK.detokenize(list(second.ids))


@pytest.mark.parametrize(
    ("policy", "limit", "kept", "dropped", "message"),
    [
        ("drop", 60, 0, 1, "longer than --max-seq-len 60"),
        ("truncate", None, 1, 0, "truncated to"),  # limit: inside the reply, so some loss is left
        ("truncate", 30, 0, 1, "no assistant token is left"),  # limit: inside the prompt
    ],
)
def test_too_long_examples_are_dropped_or_truncated_as_asked(
    policy: str, limit: int | None, kept: int, dropped: int, message: str
) -> None:
    conv = load_one({"prompt": "What?", "completion": "x" * 50})
    [full], _ = rows_of(conv)
    limit = limit or len(full) - 10
    rows, issues = rows_of(conv, max_seq_len=limit, policy=policy)
    assert len(rows) == kept
    assert sum(i.dropped for i in issues) == dropped
    assert len(issues) == 1 and message in issues[0].reason and issues[0].line == 1
    if rows:
        assert len(rows[0]) == limit and rows[0].n_trained > 0


# -- split and summary


def test_split_is_seeded_and_small_sets_are_not_split() -> None:
    items = list(range(200))
    train, held = split_train_eval(items, 0.1, seed=3)
    assert len(held) == 20 and sorted(train + held) == items
    assert split_train_eval(items, 0.1, seed=3) == (train, held)
    assert split_train_eval(items, 0.1, seed=4) != (train, held)
    assert split_train_eval(items[:30], 0.1, seed=3) == (items[:30], [])
    assert split_train_eval(items, 0.0, seed=3) == (items, [])


def test_summary_counts_reasoning_direct_and_lengths(tmp_path: Path) -> None:
    loaded = load_jsonl(write_jsonl(tmp_path / "d.jsonl", [*zephyr_records(), "{bad"]))
    rows = [r for c in loaded.conversations for r in rows_of(c)[0]]
    summary = summarize(
        str(tmp_path / "d.jsonl"), loaded.lines, len(loaded.conversations), rows, [], loaded.issues
    )
    assert (summary.rows, summary.with_reasoning, summary.direct, summary.dropped) == (6, 3, 3, 1)
    assert summary.tokens.min == min(len(r) for r in rows) and summary.tokens.max == max(len(r) for r in rows)
    assert summary.eval_on_train
    assert "with reasoning (thinking on): 3" in "\n".join(summary.lines_for_humans())
    json.dumps(summary.to_json())


def load_one(record: dict) -> Conversation:
    from hermesd.runtime.tune.data import parse_line

    return parse_line(json.dumps(record), 1)


# -- synthetic thinking traces (a daemon simulated with httpx.MockTransport)


def _fake_daemon(replies: dict[str, str | None], seen: list[dict[str, Any]]) -> Any:
    import httpx

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            data = [{"id": "hermes-4-tiny"}, {"id": "hermes-4-tiny:old", "parent": "hermes-4-tiny"}]
            return httpx.Response(200, json={"object": "list", "data": data})
        body = json.loads(request.content)
        seen.append(body)
        question = body["messages"][-1]["content"]
        reasoning = replies.get(question)
        message = {"role": "assistant", "content": "whatever", "reasoning_content": reasoning}
        return httpx.Response(200, json={"choices": [{"index": 0, "message": message}]})

    return httpx.MockTransport(handler)


def test_synthesized_traces_are_added_beside_the_direct_originals(tmp_path: Path) -> None:
    from hermesd.runtime.tune.daemon import DaemonClient
    from hermesd.runtime.tune.synth import synthesize, write_conversations

    records = [
        {"prompt": "Q1", "completion": "A1"},
        {"prompt": "Q2", "completion": "A2"},
        {"prompt": "Q3", "completion": "A3", "reasoning": "already"},
    ]
    loaded = load_jsonl(write_jsonl(tmp_path / "d.jsonl", records))
    seen: list[dict[str, Any]] = []
    client = DaemonClient(
        "http://daemon", transport=_fake_daemon({"Q1": "thought about Q1", "Q2": None}, seen)
    )
    out, issues = synthesize(loaded.conversations, client, path="d.jsonl")
    # asked about the two direct ones only, with thinking on, of the base model, without the answer
    assert [b["messages"][-1]["content"] for b in seen] == ["Q1", "Q2"]
    assert all(
        b["chat_template_kwargs"] == {"thinking": True} and b["model"] == "hermes-4-tiny" for b in seen
    )
    assert all(m["role"] != "assistant" for b in seen for m in b["messages"])
    assert len(out) == 4  # 3 originals + 1 thinking copy
    copy = out[-1]
    assert copy.messages[-1] == Message(role="assistant", content="A1", reasoning_content="thought about Q1")
    assert [i.line for i in issues] == [2] and "no reasoning" in issues[0].reason and not issues[0].dropped
    # the saved set reads back as the same conversations
    write_conversations(tmp_path / "s.jsonl", out)
    assert [c.messages for c in load_jsonl(tmp_path / "s.jsonl").conversations] == [c.messages for c in out]
