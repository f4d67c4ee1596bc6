"""The local store of LoRA adapters: `<state_dir>/adapters/<name>/{adapter.gguf, manifest.json}`.

Registration is atomic: everything is written into a hidden temporary folder beside the final one
and renamed into place in one step, so a failed or killed run leaves no half-registered adapter
(at worst a `.tmp-*` folder that the next registration sweeps). Names match a strict pattern and
every path is resolved inside the store.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
ADAPTER_FILE = "adapter.gguf"
MANIFEST_FILE = "manifest.json"


class StoreError(ValueError):
    pass


def check_name(name: str) -> str:
    """The one rule for adapter names: the store, `hermesd tune --name`, `hermesd adapters` and
    `POST /v1/adapters` all call it, so a bad name gets the same message everywhere."""
    if not NAME_PATTERN.match(name) or ".." in name:
        raise StoreError(
            f"invalid adapter name {name!r}: use 1-64 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class AdapterRecord:
    name: str
    path: Path  # the adapter GGUF
    manifest: dict[str, Any]

    @property
    def base_fingerprint(self) -> str | None:
        value = self.manifest.get("base", {}).get("fingerprint")
        return str(value) if value else None


class AdapterStore:
    def __init__(self, state_dir: Path) -> None:
        self.root = (Path(state_dir) / "adapters").resolve()

    def _dir(self, name: str) -> Path:
        folder = (self.root / check_name(name)).resolve()
        if folder.parent != self.root:
            raise StoreError(f"adapter name {name!r} escapes the store")
        return folder

    def list(self) -> list[AdapterRecord]:
        if not self.root.is_dir():
            return []
        out = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".") or not NAME_PATTERN.match(entry.name):
                continue
            try:
                out.append(self.get(entry.name))
            except StoreError:
                continue
        return out

    def exists(self, name: str) -> bool:
        return self._dir(name).is_dir()

    def get(self, name: str) -> AdapterRecord:
        folder = self._dir(name)
        path = folder / ADAPTER_FILE
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise StoreError(f"no adapter named {name!r} in {self.root}") from None
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(f"{path}: not a regular file")
        try:
            manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StoreError(f"{folder / MANIFEST_FILE}: unreadable manifest ({exc})") from None
        if not isinstance(manifest, dict):
            raise StoreError(f"{folder / MANIFEST_FILE}: manifest is not a JSON object")
        return AdapterRecord(name=name, path=path, manifest=manifest)

    def register(
        self,
        name: str,
        adapter_file: Path,
        manifest: dict[str, Any],
        *,
        replace: bool = False,
        extra_files: dict[str, Path] | None = None,
    ) -> AdapterRecord:
        """Copy `adapter_file` (and extra files) into the store under `name`, atomically."""
        final = self._dir(name)
        if final.exists() and not replace:
            raise StoreError(f"an adapter named {name!r} already exists (use another name or replace it)")
        self.root.mkdir(parents=True, exist_ok=True)
        self._sweep()
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=self.root))
        try:
            shutil.copyfile(adapter_file, tmp / ADAPTER_FILE)
            for fname, src in (extra_files or {}).items():
                shutil.copyfile(src, tmp / check_name(fname))
            record = dict(manifest, name=name, registered=time.time())
            (tmp / MANIFEST_FILE).write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
            for f in tmp.iterdir():
                with f.open("rb") as fh:
                    os.fsync(fh.fileno())
            if final.exists():
                old = Path(tempfile.mkdtemp(prefix=f".old-{name}-", dir=self.root))
                os.replace(final, old / "x")
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.get(name)

    def remove(self, name: str) -> None:
        folder = self._dir(name)
        if not folder.is_dir():
            raise StoreError(f"no adapter named {name!r} in {self.root}")
        trash = Path(tempfile.mkdtemp(prefix=f".old-{name}-", dir=self.root))
        os.replace(folder, trash / "x")
        shutil.rmtree(trash, ignore_errors=True)

    def _sweep(self) -> None:
        """Remove leftovers of registrations that were killed midway."""
        for entry in self.root.iterdir():
            if entry.name.startswith((".tmp-", ".old-")) and entry.is_dir():
                age = time.time() - entry.stat().st_mtime
                if age > 3600:
                    shutil.rmtree(entry, ignore_errors=True)
