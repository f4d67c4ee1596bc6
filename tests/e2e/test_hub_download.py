"""Downloads against a fake hub on 127.0.0.1 (tests/fixtures/fake_hub.py), with the real
huggingface_hub client: split files, resume, sha256 verification, offline mode. Nothing here may
open a socket to anything but loopback."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hermesd.models.catalog import Catalog, CatalogFile, QuantEntry, load_catalog
from hermesd.models.hub import (
    ChecksumError,
    DownloadError,
    HubEnv,
    HubError,
    OfflineMissingError,
    cached_files,
    ensure_local,
    first_file,
    refresh_catalog,
)
from tests.fixtures.fake_hub import FakeHub, point_hf_at, running_hub

REPO = "test-org/Hermes-Tiny-GGUF"
SHARDS = [f"Hermes-Tiny-Q4_K_M-{i:05d}-of-00002.gguf" for i in (1, 2)]
CHUNK = 64 * 1024


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any connection that is not to the loopback interface."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (
            "127.0.0.1",
            "::1",
            "localhost",
        ):
            raise AssertionError(f"test tried to reach {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    with running_hub() as fake:
        fake.add(REPO, {name: os.urandom(5 * CHUNK + 123 * i) for i, name in enumerate(SHARDS)})
        point_hf_at(fake, monkeypatch, tmp_path / "hf", chunk=CHUNK)
        yield fake


def entry(files: list[str] | None = None) -> QuantEntry:
    names = SHARDS if files is None else files
    return QuantEntry("Q4_K_M", REPO, tuple(CatalogFile(n) for n in names), "estimated")


class CountingProgress:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.advanced = 0

    def start(self, label: str, total: int | None, done: int = 0) -> str:
        self.started.append(label)
        return label

    def advance(self, task: Any, n: int) -> None:
        self.advanced += n

    def finish(self, task: Any) -> None:
        return None


def test_split_model_downloads_completely(hub: FakeHub, tmp_path: Path) -> None:
    env = HubEnv.from_environ()
    assert env.cache_dir == tmp_path / "hf" / "hub" and env.endpoint == hub.url and not env.offline
    progress = CountingProgress()
    paths = ensure_local(entry(), env, progress=progress, verify_record=tmp_path / "verified.json")
    assert [p.name for p in paths] == SHARDS
    for p in paths:
        assert p.read_bytes() == hub.repos[REPO].files[p.name]
        assert tmp_path / "hf" / "hub" in p.parents
    assert first_file(list(reversed(paths))).name == SHARDS[0]
    # Progress saw the bytes of both transfers and both verifications.
    assert SHARDS[0] in progress.started and f"verify {SHARDS[1]}" in progress.started
    assert progress.advanced >= 2 * sum(len(d) for d in hub.repos[REPO].files.values())
    assert cached_files(entry(), env) == paths


def test_interrupted_transfer_resumes_with_a_range_request(hub: FakeHub, tmp_path: Path) -> None:
    cut_at = 3 * CHUNK + 1000
    hub.cut[SHARDS[0]] = (cut_at, 1)
    paths = ensure_local(entry(), HubEnv.from_environ(), verify_record=tmp_path / "v.json")
    ranges = hub.gets(SHARDS[0])
    assert ranges[0] is None and len(ranges) == 2, ranges
    resumed_from = int(ranges[1].removeprefix("bytes=").rstrip("-"))  # type: ignore[union-attr]
    assert 0 < resumed_from <= cut_at
    assert paths[0].read_bytes() == hub.repos[REPO].files[SHARDS[0]]


def test_a_failed_run_keeps_finished_shards(hub: FakeHub, tmp_path: Path) -> None:
    hub.cut[SHARDS[1]] = (CHUNK // 2, 100)  # never gets past the first chunk: retries give up
    with pytest.raises(DownloadError, match="run the command again"):
        ensure_local(entry(), HubEnv.from_environ(), verify_record=tmp_path / "v.json")
    assert cached_files(entry(), HubEnv.from_environ()) is None  # the broken shard is not in the cache
    hub.cut.clear()
    before = len(hub.gets(SHARDS[0]))
    paths = ensure_local(entry(), HubEnv.from_environ(), verify_record=tmp_path / "v.json")
    assert len(hub.gets(SHARDS[0])) == before  # shard 1 came from the cache
    assert paths[1].read_bytes() == hub.repos[REPO].files[SHARDS[1]]


def test_corrupted_file_is_detected_and_not_used(hub: FakeHub, tmp_path: Path) -> None:
    hub.corrupt.add(SHARDS[1])
    env = HubEnv.from_environ()
    with pytest.raises(ChecksumError, match=f"{SHARDS[1]}: sha256 .* does not match"):
        ensure_local(entry(), env, verify_record=tmp_path / "v.json")
    blob = env.cache_dir / f"models--{REPO.replace('/', '--')}" / "blobs" / hub.repos[REPO].sha256(SHARDS[1])
    assert not blob.exists()
    assert cached_files(entry(), env) is None
    # Once the hub serves good bytes, the same call succeeds.
    hub.corrupt.clear()
    assert len(ensure_local(entry(), env, verify_record=tmp_path / "v.json")) == 2


@pytest.mark.parametrize("how", ["env", "flag"])
def test_offline_without_the_file_fails_clearly(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    env = HubEnv.from_environ(offline=how == "flag")
    assert env.offline
    with pytest.raises(OfflineMissingError, match=r"offline mode is on .*hermesd pull"):
        ensure_local(entry(), env)
    assert hub.requests == []  # not even a metadata call


def test_offline_with_the_file_needs_no_hub(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    online = ensure_local(entry(), HubEnv.from_environ(), verify_record=tmp_path / "v.json")
    count = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # A fresh verification record: offline, the sha256 comes from the blob's name in the cache.
    progress = CountingProgress()
    offline = ensure_local(
        entry(), HubEnv.from_environ(), progress=progress, verify_record=tmp_path / "new.json"
    )
    assert offline == online and len(hub.requests) == count
    assert progress.started == [f"verify {n}" for n in SHARDS]


def test_verified_files_are_not_hashed_again(hub: FakeHub, tmp_path: Path) -> None:
    record = tmp_path / "v.json"
    ensure_local(entry(), HubEnv.from_environ(), verify_record=record)
    progress = CountingProgress()
    ensure_local(entry(), HubEnv.from_environ(), progress=progress, verify_record=record)
    assert not [s for s in progress.started if s.startswith("verify")]


def test_unknown_file_names_come_from_the_listing(hub: FakeHub, tmp_path: Path) -> None:
    paths = ensure_local(entry(files=[]), HubEnv.from_environ(), verify_record=tmp_path / "v.json")
    assert [p.name for p in paths] == SHARDS


@pytest.mark.parametrize(
    "repo,message",
    [("nobody/missing", "repository not found"), (REPO, "no Q8_0 GGUF file")],
)
def test_hub_errors_are_named(hub: FakeHub, repo: str, message: str) -> None:
    bad = QuantEntry("Q8_0", repo, (), "estimated")
    with pytest.raises(HubError, match=message):
        ensure_local(bad, HubEnv.from_environ())


def test_hf_token_is_sent(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.private[REPO] = "hf_secret"
    with pytest.raises(HubError, match="set HF_TOKEN"):
        ensure_local(entry(), HubEnv.from_environ(), verify_record=tmp_path / "v.json")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert len(ensure_local(entry(), HubEnv.from_environ(), verify_record=tmp_path / "v.json")) == 2


def test_catalog_refresh_reads_names_sizes_and_sha256(hub: FakeHub) -> None:
    base = load_catalog(overlay=Path("/nonexistent"))
    v = base.variants[-1]
    variant = type(v)(**{**v.__dict__, "quants": (entry(files=["old-name.gguf"]),)})
    catalog = Catalog(variants=(variant,), quant_types=base.quant_types, by_id={variant.id: variant})
    entries, failures = refresh_catalog(catalog, HubEnv.from_environ())
    assert len(entries) == 1 and failures == []
    got = entries[0]
    assert [f.path for f in got.files] == SHARDS
    assert [f.sha256 for f in got.files] == [hub.repos[REPO].sha256(n) for n in SHARDS]
    assert [f.size for f in got.files] == [len(hub.repos[REPO].files[n]) for n in SHARDS]
    assert got.revision == hub.repos[REPO].commit


def test_the_loopback_guard_works() -> None:
    with pytest.raises(AssertionError, match="tried to reach"):
        socket.create_connection(("192.0.2.1", 443), timeout=0.1)
