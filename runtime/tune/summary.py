"""What the data looks like once checked and tokenized: counts, lengths, the split. Pure."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from hermesd.runtime.tune.data import DataIssue
from hermesd.runtime.tune.render import Row


@dataclass(frozen=True)
class LengthStats:
    min: int
    mean: float
    p95: int
    max: int

    @classmethod
    def of(cls, lengths: Sequence[int]) -> LengthStats:
        if not lengths:
            return cls(0, 0.0, 0, 0)
        ordered = sorted(lengths)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * (len(ordered) - 1) + 0.5))]
        return cls(ordered[0], round(sum(ordered) / len(ordered), 1), p95, ordered[-1])


@dataclass(frozen=True)
class DataSummary:
    path: str
    lines: int
    conversations: int  # valid conversations
    rows: int  # training rows (a multi-turn chat may give several)
    dropped: int  # lines or rows dropped, with a reason each
    truncated: int
    with_reasoning: int  # rows rendered with thinking on
    direct: int
    tokens: LengthStats
    trained_tokens: int
    train_rows: int
    eval_rows: int
    eval_on_train: bool  # too few rows to hold some out: eval loss is measured on the training rows
    train_reasoning: int = 0  # training rows (not eval) with reasoning
    train_direct: int = 0
    dropped_by_reason: dict[str, int] = field(default_factory=dict)
    max_seq_len: int | None = None  # the length rows were held to

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def lines_for_humans(self) -> list[str]:
        t = self.tokens
        out = [
            f"{self.path}: {self.lines} lines, {self.conversations} valid conversations, "
            f"{self.rows} training rows",
            f"  with reasoning (thinking on): {self.with_reasoning}   direct (thinking off): {self.direct}",
            f"  tokens per row: min {t.min}, mean {t.mean}, p95 {t.p95}, max {t.max}; "
            f"{self.trained_tokens} assistant tokens carry loss",
            f"  dropped: {self.dropped}   truncated: {self.truncated}",
        ]
        if self.dropped_by_reason:
            why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped_by_reason.items()))
            out.append(f"  dropped because: {why}")
        out.append(f"  training on: {self.train_reasoning} with reasoning, {self.train_direct} direct")
        if self.max_seq_len is not None:
            out.append(f"  --max-seq-len {self.max_seq_len}")
        if self.eval_on_train:
            out.append(
                f"  split: {self.train_rows} train, no held-out eval (too few rows): eval loss is on train"
            )
        else:
            out.append(f"  split: {self.train_rows} train, {self.eval_rows} eval")
        return out


def summarize(
    path: str,
    lines: int,
    conversations: int,
    train: Sequence[Row],
    evaluation: Sequence[Row],
    issues: Sequence[DataIssue],
    max_seq_len: int | None = None,
) -> DataSummary:
    rows = [*train, *evaluation]
    return DataSummary(
        path=path,
        lines=lines,
        conversations=conversations,
        rows=len(rows),
        dropped=sum(1 for i in issues if i.dropped),
        truncated=sum(1 for i in issues if not i.dropped),
        with_reasoning=sum(1 for r in rows if r.reasoning),
        direct=sum(1 for r in rows if not r.reasoning),
        tokens=LengthStats.of([len(r) for r in rows]),
        trained_tokens=sum(r.n_trained for r in rows),
        train_rows=len(train),
        eval_rows=len(evaluation),
        eval_on_train=not evaluation,
        train_reasoning=sum(1 for r in train if r.reasoning),
        train_direct=sum(1 for r in train if not r.reasoning),
        dropped_by_reason=dict(Counter(issue_kind(i.reason) for i in issues if i.dropped)),
        max_seq_len=max_seq_len,
    )


def issue_kind(reason: str) -> str:
    """The kind of a problem, for counting: "longer than --max-seq-len", "bad JSON", "unknown role", ..."""
    if "longer than --max-seq-len" in reason:
        return "longer than --max-seq-len"
    if "no assistant token is left" in reason:
        return "no assistant token left after truncation"
    head = reason.split(":", 1)[0]
    return re.sub(r"\d+", "N", head).strip() or reason
