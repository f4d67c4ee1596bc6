"""When GPU offload was too optimistic, loading retries with fewer layers instead of failing."""

from __future__ import annotations

import pytest

from hermesd.runtime.engine.fallback import fewer_layers, load_with_fallback
from hermesd.runtime.errors import ModelLoadError


@pytest.mark.parametrize(
    ("requested", "total", "expected"),
    [
        (-1, 40, [30, 20, 10, 0]),
        (40, 40, [30, 20, 10, 0]),
        (8, 40, [6, 4, 2, 0]),
        (1, 40, [0]),
    ],
)
def test_fewer_layers(requested: int, total: int, expected: list[int]) -> None:
    assert fewer_layers(requested, total) == expected


def fake_gpu(fits: int) -> tuple[list[int], object]:
    tried: list[int] = []

    def load(n: int) -> str:
        tried.append(n)
        if n < 0 or n > fits:
            raise ModelLoadError(f"out of GPU memory with {n} layers")
        return f"engine with {n} layers"

    return tried, load


def test_retries_down_to_what_fits() -> None:
    tried, load = fake_gpu(fits=22)
    assert (
        load_with_fallback(load, gpu_layers=-1, total_layers=40, gpu_available=True)
        == "engine with 20 layers"
    )
    assert tried == [-1, 30, 20]


def test_no_retry_without_a_gpu() -> None:
    tried, load = fake_gpu(fits=-1)
    with pytest.raises(ModelLoadError):
        load_with_fallback(load, gpu_layers=-1, total_layers=40, gpu_available=False)
    assert tried == [-1]


def test_gives_up_with_the_last_error() -> None:
    def load(n: int) -> str:
        raise ModelLoadError(f"bad file ({n})")

    with pytest.raises(ModelLoadError, match=r"bad file \(0\)"):
        load_with_fallback(load, gpu_layers=16, total_layers=40, gpu_available=True)
