"""Fetch a catalog entry's GGUF files from the Hugging Face hub into the standard HF cache.

- Downloads go through `huggingface_hub.hf_hub_download` (cache layout, locks, xet when the real
  hub offers it); every shard of a split file is fetched.
- Resume: within a run, huggingface_hub retries a dropped transfer with an HTTP Range request from
  the byte it reached; across runs, finished shards stay in the cache and are not fetched again.
  (huggingface_hub >= 1.x deletes a partial file when a run dies, so a single file restarts.)
- Every file is checked against the sha256 the hub's metadata gives for it (the LFS oid) before its
  path is returned; a mismatch deletes it from the cache. Verified files are remembered by
  (path, size, mtime) so a 240 GB model is not hashed on every start.
- HF_ENDPOINT, HF_TOKEN, HF_HOME / HF_HUB_CACHE and HF_HUB_OFFLINE are read when called, not when
  imported (huggingface_hub reads some of them at import time, so they are passed explicitly).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from hermesd.models.catalog import (
    Catalog,
    CatalogFile,
    OverlayEntry,
    QuantEntry,
    overlay_from_listing,
    quant_from_filename,
)
from hermesd.models.gguf_split import first_shard, parse_split_name

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_GIT_OID_RE = re.compile(r"^[0-9a-f]{40}$")
_TRUE = ("1", "on", "yes", "true")


class HubError(RuntimeError):
    """A download problem the user can act on; the message says what and how."""


class OfflineMissingError(HubError):
    pass


class ChecksumError(HubError):
    pass


class DownloadError(HubError):
    pass


class DownloadProgress(Protocol):
    """Where download and hashing progress goes (the CLI shows it with rich)."""

    def start(self, label: str, total: int | None, done: int = 0) -> Any: ...

    def advance(self, task: Any, n: int) -> None: ...

    def finish(self, task: Any) -> None: ...


@dataclass(frozen=True)
class HubEnv:
    endpoint: str
    cache_dir: Path
    token: str | None
    offline: bool

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, *, offline: bool = False) -> HubEnv:
        env = os.environ if environ is None else environ
        if env.get("HF_HUB_CACHE"):
            cache = Path(env["HF_HUB_CACHE"])
        elif env.get("HUGGINGFACE_HUB_CACHE"):
            cache = Path(env["HUGGINGFACE_HUB_CACHE"])
        elif env.get("HF_HOME"):
            cache = Path(env["HF_HOME"]) / "hub"
        else:
            xdg = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
            cache = Path(xdg) / "huggingface" / "hub"
        flag = (env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE") or "").lower() in _TRUE
        return cls(
            endpoint=(env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/"),
            cache_dir=cache.expanduser(),
            token=env.get("HF_TOKEN") or None,
            offline=offline or flag,
        )


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int | None
    sha256: str | None  # LFS files (weights, GGUF)
    # files kept in git itself (config.json, tokenizer.json): the hub gives their git blob id instead
    git_oid: str | None = None


@dataclass(frozen=True)
class ResolvedFiles:
    repo: str
    revision: str  # a commit hash
    files: tuple[RemoteFile, ...]


def default_verify_record() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hermesd" / "verified-sha256.json"


# -- hub metadata


def _api(env: HubEnv) -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=env.endpoint, token=env.token)


def list_repo(repo: str, env: HubEnv, revision: str | None = None) -> tuple[str, list[RemoteFile]]:
    """(commit, files with size and sha256) of a repo, from the hub's model-info API."""
    if env.offline:
        raise OfflineMissingError(f"cannot list {repo}: offline mode is on (--offline or HF_HUB_OFFLINE)")
    with _translated(f"{repo}", env):
        info = _api(env).model_info(repo, revision=revision, files_metadata=True)
    files = [
        RemoteFile(
            s.rfilename,
            (s.lfs.size if s.lfs else s.size),
            (s.lfs.sha256 if s.lfs else None),
            None if s.lfs else s.blob_id,
        )
        for s in info.siblings or []
    ]
    return str(info.sha), files


def resolve(entry: QuantEntry, env: HubEnv) -> ResolvedFiles:
    """The files of a catalog entry as the hub has them now (names, sizes, sha256, commit)."""
    commit, listing = list_repo(entry.repo, env, entry.revision)
    by_path = {f.path: f for f in listing}
    wanted = [f.path for f in entry.files]
    if wanted and all(p in by_path for p in wanted):
        files = [by_path[p] for p in wanted]
    else:
        # Names not (or not all) as the catalog expects: match the quant token in the listing.
        files = sorted(
            (
                f
                for f in listing
                if f.path.lower().endswith(".gguf") and quant_from_filename(f.path) == entry.quant.upper()
            ),
            key=lambda f: f.path,
        )
        if wanted and files:
            log.warning(
                "%s: catalog names differ from the hub; using %s", entry.repo, [f.path for f in files]
            )
    if not files:
        raise HubError(
            f"{entry.repo} has no {entry.quant} GGUF file at {commit[:12]} (run `hermesd catalog refresh`)"
        )
    return ResolvedFiles(entry.repo, commit, tuple(files))


def refresh_catalog(catalog: Catalog, env: HubEnv) -> tuple[list[OverlayEntry], list[str]]:
    """Overlay entries for every repo the catalog names, from the hub's metadata, and one message
    per repo that could not be read (the others are still refreshed)."""
    out: list[OverlayEntry] = []
    failures: list[str] = []
    for repo in sorted({q.repo for v in catalog.variants for q in v.quants}):
        try:
            commit, listing = list_repo(repo, env)
        except HubError as exc:
            failures.append(str(exc))
            continue
        files = [CatalogFile(f.path, f.size, f.sha256) for f in listing]
        out.extend(overlay_from_listing(catalog, repo, commit, files))
    return out, failures


# -- local cache


def cached_files(entry: QuantEntry, env: HubEnv) -> list[Path] | None:
    """Paths of the entry's files in the HF cache, without any network; None if any is missing.

    Looks in the snapshot the revision (default "main") points to, then in any other snapshot of
    the repo that holds all the files (a cache filled by another tool may lack the ref)."""
    for snapshot in _snapshots(entry.repo, entry.revision or "main", env):
        names = [f.path for f in entry.files]
        if names:
            paths = [snapshot / n for n in names]
            if all(p.is_file() for p in paths):
                return paths
            continue
        matches = sorted(
            p for p in snapshot.rglob("*.gguf") if quant_from_filename(p.name) == entry.quant.upper()
        )
        if matches and _complete(matches):
            return matches
    return None


def _complete(paths: Sequence[Path]) -> bool:
    """All parts of a split set are present (by their -0000k-of-0000n names)."""
    splits = [parse_split_name(p.name) for p in paths]
    if all(s is None for s in splits):
        return len(paths) == 1
    total = {s.count for s in splits if s is not None}
    return len(total) == 1 and len(paths) == total.pop()


def _snapshots(repo: str, revision: str, env: HubEnv) -> list[Path]:
    root = env.cache_dir / ("models--" + repo.replace("/", "--"))
    ref = root / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    first = root / "snapshots" / commit
    others = sorted(
        (p for p in (root / "snapshots").glob("*") if p.is_dir() and p != first),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    return ([first] if first.is_dir() else []) + others


def _remember_revision(repo: str, revision: str, commit: str, env: HubEnv) -> None:
    """Write refs/<revision> like huggingface_hub does, so offline lookups by branch work."""
    if revision == commit:
        return
    ref = env.cache_dir / ("models--" + repo.replace("/", "--")) / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)


# -- download


def ensure_local(
    entry: QuantEntry,
    env: HubEnv,
    *,
    progress: DownloadProgress | None = None,
    verify_record: Path | None = None,
) -> list[Path]:
    """The entry's files on disk and verified: from the cache, or downloaded when online."""
    record = verify_record or default_verify_record()
    if env.offline:
        paths = cached_files(entry, env)
        if paths is None:
            raise OfflineMissingError(
                f"{entry.repo}: the {entry.quant} files are not in the Hugging Face cache ({env.cache_dir}) "
                "and offline mode is on (--offline or HF_HUB_OFFLINE=1). Download them on a connected "
                "machine with `hermesd pull`, or copy that cache here."
            )
        verify_cached(paths, progress=progress, verify_record=record)
        return paths
    resolved = resolve(entry, env)
    paths = download(resolved, env, progress=progress, verify_record=record)
    _remember_revision(entry.repo, entry.revision or "main", resolved.revision, env)
    return paths


def download(
    resolved: ResolvedFiles,
    env: HubEnv,
    *,
    progress: DownloadProgress | None = None,
    verify_record: Path | None = None,
) -> list[Path]:
    from huggingface_hub import hf_hub_download

    record = verify_record or default_verify_record()
    paths = []
    for f in resolved.files:
        with _translated(f"{resolved.repo}/{f.path}", env):
            local = hf_hub_download(
                resolved.repo,
                f.path,
                revision=resolved.revision,
                cache_dir=str(env.cache_dir),
                endpoint=env.endpoint,
                token=env.token,
                tqdm_class=_tqdm_class(progress, f.path) if progress else None,
            )
        path = Path(str(local))
        if f.size is not None and path.stat().st_size != f.size:
            _evict(path)
            raise DownloadError(
                f"{resolved.repo}/{f.path}: {path.stat().st_size} bytes on disk, {f.size} expected"
            )
        verify_file(path, f.sha256, record, progress, git_oid=f.git_oid)
        paths.append(path)
    return paths


# -- a Hugging Face model's own files (`hermesd tune` trains on the safetensors)

# What transformers needs to build and load a causal LM, and what the pairing check reads; never
# the repo's other files (original/ checkpoints, GGUF copies, images).
HF_MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*-of-*.safetensors",
)


def ensure_repo_files(
    repo: str,
    env: HubEnv,
    patterns: Sequence[str],
    *,
    required: Sequence[str] = ("config.json",),
    revision: str | None = None,
    progress: DownloadProgress | None = None,
    verify_record: Path | None = None,
) -> Path:
    """The snapshot folder of `repo` holding its files that match `patterns` (fnmatch), downloaded
    and verified like GGUF files (cache, resume, sha256), or found in the cache when offline.
    `required` names files the repo must have; a missing one is a HubError naming it."""
    from fnmatch import fnmatch

    record = verify_record or default_verify_record()
    if env.offline:
        for snapshot in _snapshots(repo, revision or "main", env):
            has_required = all((snapshot / name).is_file() for name in required)
            if has_required and _weights_complete(snapshot, patterns):
                wanted = sorted(
                    f for f in snapshot.iterdir() if any(fnmatch(f.name, pat) for pat in patterns)
                )
                verify_cached(wanted, progress=progress, verify_record=record)
                return snapshot
        raise OfflineMissingError(
            f"{repo}: {', '.join(required)} not in the Hugging Face cache ({env.cache_dir}) and offline "
            "mode is on (--offline or HF_HUB_OFFLINE=1); run once with the hub reachable, or copy "
            "that cache here"
        )
    commit, listing = list_repo(repo, env, revision)
    # top-level files only: the snapshot folder is what transformers loads
    files = tuple(f for f in listing if "/" not in f.path and any(fnmatch(f.path, pat) for pat in patterns))
    missing = [name for name in required if name not in {f.path for f in files}]
    if missing:
        raise HubError(f"{repo} at {commit[:12]}: the repository has no {', '.join(missing)}")
    paths = download(ResolvedFiles(repo, commit, files), env, progress=progress, verify_record=record)
    _remember_revision(repo, revision or "main", commit, env)
    return paths[0].parent if paths else env.cache_dir


def _weights_complete(snapshot: Path, patterns: Sequence[str]) -> bool:
    """Offline: when safetensors are wanted, the snapshot has every shard its index names."""
    if not any(p.endswith(".safetensors") for p in patterns):
        return True
    index = snapshot / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            return False
        return all((snapshot / name).is_file() for name in shards)
    return (snapshot / "model.safetensors").is_file()


def verify_file(
    path: Path,
    expected: str | None,
    record: Path,
    progress: DownloadProgress | None = None,
    *,
    git_oid: str | None = None,
) -> None:
    """Raise ChecksumError (and evict the file from the cache) unless its sha256 is `expected`, or,
    for a file kept in git (no sha256), unless its git blob id is `git_oid`."""
    if expected is None:
        if git_oid is not None:
            _verify_git_blob(path, git_oid)
        else:
            log.warning("%s: the hub gave no checksum for it; not verified", path)
        return
    real = path.resolve()
    stat = real.stat()
    known = _read_record(record).get(str(real))
    if known == {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": expected}:
        return
    digest = _sha256(real, progress, f"verify {path.name}")
    if digest != expected:
        _evict(path)
        raise ChecksumError(
            f"{path.name}: sha256 {digest[:16]}… does not match the hub's {expected[:16]}…; the file was "
            "corrupted in transfer or on disk and has been removed from the cache. Run the command again."
        )
    _write_record(record, str(real), {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": expected})


def verify_cached(
    paths: Sequence[Path], *, progress: DownloadProgress | None = None, verify_record: Path | None = None
) -> None:
    """Verify files already in the HF cache, offline: a blob is named by its ETag, an LFS file's
    sha256 or a git file's blob id."""
    record = verify_record or default_verify_record()
    for p in paths:
        name = p.resolve().name
        sha256 = name if _SHA256_RE.match(name) else None
        git_oid = name if _GIT_OID_RE.match(name) else None
        verify_file(p, sha256, record, progress, git_oid=git_oid)


def _verify_git_blob(path: Path, oid: str) -> None:
    """A git file is small (the hub keeps big ones in LFS): hash it each time, as git does:
    sha1 of `blob <size>\\0` and the bytes."""
    data = path.read_bytes()
    digest = hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
    if digest != oid:
        _evict(path)
        raise ChecksumError(
            f"{path.name}: git blob id {digest[:12]}… does not match the hub's {oid[:12]}…; the file was "
            "corrupted in transfer or on disk and has been removed from the cache. Run the command again."
        )


def _sha256(path: Path, progress: DownloadProgress | None, label: str) -> str:
    h = hashlib.sha256()
    task = progress.start(label, path.stat().st_size) if progress else None
    with path.open("rb") as fh:
        while chunk := fh.read(8 << 20):
            h.update(chunk)
            if progress:
                progress.advance(task, len(chunk))
    if progress:
        progress.finish(task)
    return h.hexdigest()


def _evict(path: Path) -> None:
    """Remove a snapshot link and its blob, so a bad file is never picked up from the cache."""
    blob = path.resolve()
    for p in {path, blob}:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _read_record(record: Path) -> dict[str, Any]:
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_record(record: Path, key: str, value: dict[str, Any]) -> None:
    data = _read_record(record)
    data[key] = value
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(record)


def first_file(paths: Sequence[Path]) -> Path:
    """The path to hand llama.cpp: the single file, or part 1 of a split set."""
    return Path(first_shard([str(p) for p in paths]))


# -- huggingface_hub glue


class _translated:
    """Turn huggingface_hub / HTTP exceptions into HubError messages users can act on."""

    def __init__(self, what: str, env: HubEnv) -> None:
        self.what, self.env = what, env

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> Literal[False]:
        if exc is None or isinstance(exc, HubError):
            return False
        from huggingface_hub import errors

        where = f"{self.what} at {self.env.endpoint}"
        if isinstance(exc, errors.GatedRepoError):
            raise HubError(
                f"{where}: gated repository; accept its terms on the hub and set HF_TOKEN"
            ) from exc
        if isinstance(exc, errors.RepositoryNotFoundError):
            raise HubError(f"{where}: repository not found (or private: set HF_TOKEN)") from exc
        if isinstance(exc, errors.RevisionNotFoundError):
            raise HubError(f"{where}: revision not found") from exc
        if isinstance(exc, errors.RemoteEntryNotFoundError):
            raise HubError(f"{where}: file not found in the repository") from exc
        if isinstance(exc, errors.OfflineModeIsEnabled):
            raise OfflineMissingError(f"{where}: offline mode is on (HF_HUB_OFFLINE)") from exc
        if isinstance(exc, errors.LocalEntryNotFoundError):
            raise DownloadError(f"{where}: cannot reach the hub and the file is not cached ({exc})") from exc
        if isinstance(exc, errors.HfHubHTTPError):
            raise DownloadError(f"{where}: the hub answered {exc}") from exc
        if isinstance(exc, OSError) or type(exc).__module__.startswith(("httpx", "httpcore")):
            raise DownloadError(
                f"{where}: download failed ({type(exc).__name__}: {exc}); run the command again: "
                "finished files are kept"
            ) from exc
        return False


def _tqdm_class(progress: DownloadProgress, label: str) -> type:
    """A tqdm stand-in that forwards huggingface_hub's progress updates to `progress`."""

    class _Bar:
        def __init__(self, *args: Any, total: int | None = None, initial: int = 0, **kwargs: Any) -> None:
            self.total, self.n = total, initial
            self.task = progress.start(label, total, initial)

        def update(self, n: int = 1) -> None:
            self.n += n
            progress.advance(self.task, n)

        def close(self) -> None:
            progress.finish(self.task)

        def set_description(self, *args: Any, **kwargs: Any) -> None:
            return None

        def __enter__(self) -> _Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            self.close()

    return _Bar
