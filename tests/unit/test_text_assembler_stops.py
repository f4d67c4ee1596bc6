"""Which stop string ended the text: the Anthropic API reports it as `stop_sequence`."""

from __future__ import annotations

import pytest

from hermesd.runtime.engine.text_stream import TextAssembler

CASES = [
    # (pieces, stops, emitted text, the stop that matched)
    (["Hello END there"], ("END",), "Hello ", "END"),
    (["one ", "tw", "o three"], ("three", "two"), "one ", "two"),  # the earliest in the text wins
    (["no stop here"], ("END",), "no stop here", None),
    (["split E", "N", "D after"], ("END",), "split ", "END"),
]


@pytest.mark.parametrize(("pieces", "stops", "text", "matched"), CASES)
def test_the_matched_stop_is_recorded(
    pieces: list[str], stops: tuple[str, ...], text: str, matched: str | None
) -> None:
    a = TextAssembler(stops=stops)
    out = "".join(a.push(p.encode()) for p in pieces) + a.flush()
    assert (out, a.matched, a.stopped) == (text, matched, matched is not None)
