"""Logging set-up for the daemon: one line per record, level from --log-level."""

from __future__ import annotations

import logging


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpx2", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # llama.cpp's own log lines are debug-level chatter unless asked for
    logging.getLogger("hermesd.llama_cpp").setLevel(
        logging.DEBUG if level.lower() == "debug" else logging.WARNING
    )
