from __future__ import annotations

import pytest

from scheduler.errors import InvalidAnnotation
from scheduler.quantity import cpu_millis, memory_bytes


@pytest.mark.parametrize(("text", "millis"), [
    ("500m", 500), ("1", 1000), ("1.5", 1500), ("0.1", 100), ("2k", 2_000_000),
    ("1e3", 1_000_000), ("1.0001", 1001), ("250000u", 250), (2, 2000),
])
def test_cpu(text: str, millis: int) -> None:
    assert cpu_millis(text) == millis


@pytest.mark.parametrize(("text", "size"), [
    ("128Mi", 128 * 2**20), ("1Gi", 2**30), ("1G", 10**9), ("1.5Gi", 3 * 2**29),
    ("64Ki", 65536), ("1k", 1000), ("1M", 10**6), ("100", 100), ("1e6", 10**6),
    ("500m", 1),
])
def test_memory(text: str, size: int) -> None:
    assert memory_bytes(text) == size


@pytest.mark.parametrize("bad", ["", "1Gb", "abc", "1.2.3", "Mi", "1 Gi"])
def test_malformed_quantities_are_refused(bad: str) -> None:
    with pytest.raises(InvalidAnnotation):
        memory_bytes(bad)
