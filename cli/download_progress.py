"""A model download drawn with rich, for `pull` and for `serve` fetching what its plan picked."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class RichDownloadProgress:
    """hermesd.models.hub.DownloadProgress drawn with rich (on stderr, so --json stays clean)."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )

    def __enter__(self) -> RichDownloadProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, label: str, total: int | None, done: int = 0) -> TaskID:
        return self.progress.add_task(label, total=total, completed=done)

    def advance(self, task: Any, n: int) -> None:
        self.progress.advance(task, n)

    def finish(self, task: Any) -> None:
        total = self.progress.tasks[task].total if task in self.progress.task_ids else None
        if total is not None:
            self.progress.update(task, completed=total)
