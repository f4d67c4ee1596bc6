"""Reading a request's reasoning switches, in every spelling clients already send.

`think` (Ollama), `reasoning_effort` ("none" = off), `chat_template_kwargs.thinking` /
`enable_thinking` / `keep_cots`, and OpenRouter's `reasoning.enabled`. When two of them disagree
the request is refused rather than one silently winning.

An effort level (`reasoning_effort`, `reasoning.effort`, Ollama's `think: "high"`) also sets the
reasoning budget, from the one table `REASONING_EFFORTS` (models/formats/reasoning.py); a number
the request gives (`max_reasoning_tokens`, `thinking_token_budget`, `reasoning.max_tokens`) wins.
"""

from __future__ import annotations

from hermesd.models.formats.reasoning import REASONING_EFFORTS, Reasoning
from hermesd.server.errors import invalid
from hermesd.server.protocol.chat import ChatCompletionRequest


def effort(level: str, param: str) -> tuple[bool, int | None]:
    """(reasoning on, budget) of an effort level; every API that takes one reads it here."""
    if level not in REASONING_EFFORTS:
        raise invalid(f"{param}: one of {', '.join(REASONING_EFFORTS)}, not {level!r}", param=param)
    return REASONING_EFFORTS[level]


def resolve_reasoning(
    req: ChatCompletionRequest, *, default_think: bool, default_budget: int | None
) -> Reasoning:
    """The request's `Reasoning`, as far as the request decides it (the prompt adds the rest)."""
    votes: list[tuple[str, bool]] = []
    levels: list[tuple[str, str]] = []  # (param, effort level)
    if req.think is not None:
        votes.append(("think", req.think is not False))
        if isinstance(req.think, str):
            levels.append(("think", req.think))
    if req.reasoning_effort is not None:
        levels.append(("reasoning_effort", req.reasoning_effort))
    kwargs = req.chat_template_kwargs
    if kwargs is not None:
        if kwargs.thinking is not None:
            votes.append(("chat_template_kwargs.thinking", kwargs.thinking))
        if kwargs.enable_thinking is not None:
            votes.append(("chat_template_kwargs.enable_thinking", kwargs.enable_thinking))
    if req.reasoning is not None:
        if req.reasoning.enabled is not None:
            votes.append(("reasoning.enabled", req.reasoning.enabled))
        elif req.reasoning.effort is not None:
            levels.append(("reasoning.effort", req.reasoning.effort))
    efforts = [(param, effort(level, param)) for param, level in levels]
    votes.extend((param, on) for param, (on, _) in efforts if param != "think")
    values = {v for _, v in votes}
    if len(values) > 1:
        names = ", ".join(f"{n}={'on' if v else 'off'}" for n, v in votes)
        raise invalid(f"conflicting reasoning switches: {names}", param=votes[0][0])
    thinking = values.pop() if values else default_think

    budgets = [
        b
        for b in (
            req.max_reasoning_tokens,
            req.thinking_token_budget,
            req.reasoning.max_tokens if req.reasoning else None,
        )
        if b is not None
    ]
    if budgets:
        budget: int | None = min(budgets)
    elif efforts:
        capped = [b for _, (on, b) in efforts if on and b is not None]
        budget = min(capped) if capped else None
    else:
        budget = default_budget
    keep_cots = bool(kwargs.keep_cots) if kwargs is not None and kwargs.keep_cots is not None else False
    separate = req.reasoning_format not in ("inline", "none")
    return Reasoning(thinking=thinking, keep_cots=keep_cots, budget=budget, separate=separate)
