"""tests/engine: tests that load llama.cpp in this process (the real engine, its grammar parser, or
the tiny models, which are tokenized with llama.cpp when they are built). tests/unit never does:
CI runs it with `llama_cpp` unimportable. Every test here carries the `engine` marker."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.engine)
