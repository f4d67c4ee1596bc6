"""Split GGUF names (models/gguf_split.py): the one parser of `-0000k-of-0000n.gguf`, as llama.cpp names
the parts of a split model."""

from __future__ import annotations

from pathlib import Path

import pytest

from hermesd.models.gguf_split import (
    SplitName,
    SplitSetIncomplete,
    first_shard,
    parse_split_name,
    shard_name,
    shard_paths,
    unsplit_name,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a-Q6_K-00002-of-00002.gguf", SplitName("a-Q6_K", 2, 2)),
        ("dir/x.Q4_K_M-00001-of-00018.gguf", SplitName("dir/x.Q4_K_M", 1, 18)),
        ("a-Q6_K.gguf", None),
        ("a-0001-of-0002.gguf", None),  # llama.cpp writes five digits
        ("a-00001-of-00002.GGUF", None),  # and a lower-case suffix, which it looks for
        ("-00001-of-00002.gguf", None),  # no prefix
        ("a-00001-of-00002.gguf.part", None),
    ],
)
def test_parse_split_name(name: str, expected: SplitName | None) -> None:
    assert parse_split_name(name) == expected


def test_names_round_trip() -> None:
    assert shard_name("m", 3, 12) == "m-00003-of-00012.gguf"
    assert parse_split_name(shard_name("m", 3, 12)) == SplitName("m", 3, 12)
    assert SplitName("m", 1, 2).part_name(2) == "m-00002-of-00002.gguf"
    assert unsplit_name("m-Q4-00001-of-00002.gguf") == "m-Q4.gguf"
    assert unsplit_name("sub/m-00001-of-00002.gguf", suffix="") == "sub/m"
    assert unsplit_name("single.gguf") == "single.gguf"


def test_first_shard() -> None:
    assert first_shard(["x-00002-of-00002.gguf", "x-00001-of-00002.gguf"]) == "x-00001-of-00002.gguf"
    assert first_shard(["single.gguf"]) == "single.gguf"


def test_shard_paths(tmp_path: Path) -> None:
    parts = [tmp_path / shard_name("m", i, 3) for i in (1, 2, 3)]
    for p in parts:
        p.write_bytes(b"")
    assert shard_paths(parts[1]) == tuple(parts)
    single = tmp_path / "single.gguf"
    assert shard_paths(single) == (single,)
    parts[2].unlink()
    with pytest.raises(SplitSetIncomplete, match=r"split GGUF is incomplete; missing m-00003-of-00003\.gguf"):
        shard_paths(parts[0])
