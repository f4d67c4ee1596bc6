"""Names of split GGUF files: the one place that parses or builds `<prefix>-00001-of-00003.gguf`.

llama.cpp's `gguf-split` writes the parts of a model as `<prefix>-%05d-of-%05d.gguf`, and
llama.cpp, given part 1, derives the names of the others the same way (`llama_split_path`), so the
rule here is exactly that one: five digits each, a lower-case `.gguf`. The catalog, the hub
download, the list of local models, the validator and the server's model ids all use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<part>\d{5})-of-(?P<count>\d{5})\.gguf$", re.DOTALL)


class SplitSetIncomplete(ValueError):
    """Some parts of a split GGUF are missing; the message names the file and the missing parts."""


@dataclass(frozen=True)
class SplitName:
    """A part of a split GGUF, from its name. `prefix` is everything before `-0000k-of-0000n.gguf`
    (a folder part included, when the name had one)."""

    prefix: str
    part: int  # 1-based, as in the name
    count: int

    def part_name(self, part: int) -> str:
        return shard_name(self.prefix, part, self.count)


def parse_split_name(name: str) -> SplitName | None:
    """The split parts of a file name (or a path string), or None for a single file."""
    m = _SPLIT_NAME.match(name)
    return SplitName(m["prefix"], int(m["part"]), int(m["count"])) if m else None


def shard_name(prefix: str, part: int, count: int) -> str:
    """The name llama.cpp gives part `part` (1-based) of `count`."""
    return f"{prefix}-{part:05d}-of-{count:05d}.gguf"


def unsplit_name(name: str, suffix: str = ".gguf") -> str:
    """The name without its split suffix: `a-Q4-00001-of-00002.gguf` -> `a-Q4` + suffix. A single
    file's name is returned as it is."""
    split = parse_split_name(name)
    return split.prefix + suffix if split else name


def shard_paths(path: Path) -> tuple[Path, ...]:
    """All parts of a split GGUF, part 1 first, given any part (or the file itself when not split).

    Raises SplitSetIncomplete when a part is missing.
    """
    split = parse_split_name(path.name)
    if split is None:
        return (path,)
    parts = tuple(path.with_name(split.part_name(i)) for i in range(1, split.count + 1))
    missing = [p.name for p in parts if not p.exists()]
    if missing:
        raise SplitSetIncomplete(f"{path}: split GGUF is incomplete; missing {', '.join(missing)}")
    return parts


def first_shard(paths: Iterable[str]) -> str:
    """The file llama.cpp must be given: the single file, or part 1 of a split set."""
    ordered = sorted(paths)
    for p in ordered:
        split = parse_split_name(p)
        if split is None or split.part == 1:
            return p
    return ordered[0]
