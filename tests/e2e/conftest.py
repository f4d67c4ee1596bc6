from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server_process import ServerProcess, run_server
from tests.fixtures.tiny_models import tiny_model


@pytest.fixture(scope="session")
def e2e_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session", params=["qwen3", "llama"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def qwen3_server(e2e_tmp: Path) -> Iterator[ServerProcess]:
    with run_server(tiny_model("qwen3"), e2e_tmp, "--parallel", "4", "--ctx", "2048") as server:
        yield server


@pytest.fixture(scope="session")
def llama_server(e2e_tmp: Path) -> Iterator[ServerProcess]:
    with run_server(tiny_model("llama"), e2e_tmp, "--parallel", "4", "--ctx", "2048") as server:
        yield server


@pytest.fixture(scope="session")
def server(kind: str, request: pytest.FixtureRequest) -> ServerProcess:
    """The tiny model of each prompt format behind a real `hermesd serve`."""
    return request.getfixturevalue(f"{kind}_server")  # type: ignore[no-any-return]
