"""GGUF models already on this machine, in the standard Hugging Face cache.

Each split set (`-00001-of-0000N.gguf` parts) is one model; a set with missing parts is listed as
incomplete. Files are labelled with the catalog's variant and quant when the catalog knows them,
else with the quant read from the file name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hermesd.models.catalog import Catalog, quant_from_filename
from hermesd.models.gguf_split import parse_split_name, unsplit_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalModel:
    repo: str
    commit: str
    refs: tuple[str, ...]
    paths: tuple[Path, ...]  # snapshot paths, part 1 first
    size_bytes: int
    variant: str | None
    quant: str | None
    parts_expected: int

    @property
    def first(self) -> Path:
        return self.paths[0]

    @property
    def complete(self) -> bool:
        return len(self.paths) == self.parts_expected

    @property
    def name(self) -> str:
        return unsplit_name(self.paths[0].name)


def list_local_models(catalog: Catalog, cache_dir: Path) -> list[LocalModel]:
    """Every GGUF model (split sets grouped) in the HF cache at `cache_dir`."""
    out: list[LocalModel] = []
    if not cache_dir.is_dir():
        return out
    for repo_dir in sorted(cache_dir.glob("models--*")):
        repo = repo_dir.name.removeprefix("models--").replace("--", "/")
        refs = _refs(repo_dir)
        for snapshot in sorted((repo_dir / "snapshots").glob("*")):
            if snapshot.is_dir():
                out.extend(_models_in(catalog, repo, snapshot, refs.get(snapshot.name, ())))
    return out


def _refs(repo_dir: Path) -> dict[str, tuple[str, ...]]:
    by_commit: dict[str, list[str]] = {}
    refs_dir = repo_dir / "refs"
    for ref in sorted(refs_dir.rglob("*")) if refs_dir.is_dir() else []:
        if ref.is_file():
            by_commit.setdefault(ref.read_text().strip(), []).append(str(ref.relative_to(refs_dir)))
    return {k: tuple(v) for k, v in by_commit.items()}


def _models_in(catalog: Catalog, repo: str, snapshot: Path, refs: tuple[str, ...]) -> Iterable[LocalModel]:
    groups: dict[str, list[Path]] = {}
    for path in snapshot.rglob("*.gguf"):
        if not path.exists():  # a dangling link: the blob was removed
            continue
        rel = path.relative_to(snapshot).as_posix()
        groups.setdefault(unsplit_name(rel, suffix=""), []).append(path)
    for _, paths in sorted(groups.items()):
        paths.sort()
        rel = paths[0].relative_to(snapshot).as_posix()
        split = parse_split_name(paths[0].name)
        found = catalog.find_file(repo, rel)
        yield LocalModel(
            repo=repo,
            commit=snapshot.name,
            refs=refs,
            paths=tuple(paths),
            size_bytes=sum(p.stat().st_size for p in paths),
            variant=found[0].id if found else None,
            quant=found[1].quant if found else quant_from_filename(rel),
            parts_expected=split.count if split else 1,
        )
