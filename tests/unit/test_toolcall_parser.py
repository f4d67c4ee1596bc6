from __future__ import annotations

import logging
import re

import pytest

from hermesd.models.formats.toolcalls import ToolCallParser, parse_tool_calls
from tests.unit.formats_cases import TIME, TOOL_CASES, Case, chunkings, counter_ids, expected, run


@pytest.mark.parametrize("case", TOOL_CASES, ids=lambda c: c.id)
def test_whole_text(case: Case) -> None:
    content, calls = parse_tool_calls(case.text, case.tools, id_factory=counter_ids())
    assert content == case.content
    assert [(c.name, c.arguments) for c in calls] == list(case.calls)
    assert [c.index for c in calls] == list(range(len(case.calls)))


@pytest.mark.parametrize("case", TOOL_CASES, ids=lambda c: c.id)
def test_streamed_in_every_split(case: Case) -> None:
    want = expected(case)
    for chunks in chunkings(case.text):
        assert run(ToolCallParser(case.tools, id_factory=counter_ids()), chunks) == want, chunks


def test_any_name_accepted_without_a_tool_list() -> None:
    content, calls = parse_tool_calls('<tool_call>{"name": "anything"}</tool_call>', None)
    assert content == "" and calls[0].name == "anything"


def test_default_ids_are_random_and_prefixed() -> None:
    _, calls = parse_tool_calls(f"<tool_call>{TIME}</tool_call><tool_call>{TIME}</tool_call>", None)
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", c.id) for c in calls)
    assert calls[0].id != calls[1].id


def test_rejected_block_logs_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hermesd.models.formats.toolcalls"):
        parse_tool_calls('<tool_call>{"name": "nope"}</tool_call>', ["get_time"])
    assert len(caplog.records) == 1 and "unknown tool 'nope'" in caplog.records[0].getMessage()
