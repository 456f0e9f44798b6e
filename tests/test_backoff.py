from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.backoff import Backoff


def ceilings(backoff: Backoff, count: int, connected_for_s: float = 0.0) -> list[float]:
    seen = []
    backoff.uniform = lambda low, high: seen.append((low, high)) or high  # type: ignore[func-returns-value]
    for _ in range(count):
        backoff.next_delay(connected_for_s)
    return [high for _, high in seen]


def test_exponential_until_the_cap() -> None:
    assert ceilings(Backoff(0.5, 30.0), 9) == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_full_jitter_draws_from_zero() -> None:
    draws: list[tuple[float, float]] = []
    backoff = Backoff(0.5, 30.0, uniform=lambda a, b: draws.append((a, b)) or a)  # type: ignore[func-returns-value]
    assert backoff.next_delay() == 0.0
    assert draws == [(0.0, 0.5)]


def test_stable_connection_resets() -> None:
    backoff = Backoff(0.5, 30.0, stable_after_s=10.0)
    assert ceilings(backoff, 4) == [0.5, 1, 2, 4]
    assert ceilings(backoff, 1, connected_for_s=9.9) == [8]  # too short: keeps growing
    assert ceilings(backoff, 2, connected_for_s=10.0) == [0.5, 0.5]  # each one stayed up long enough


@given(st.floats(0.01, 5), st.floats(5, 120), st.integers(1, 60))
def test_delays_never_exceed_the_cap(base: float, cap: float, attempts: int) -> None:
    backoff = Backoff(base, cap)
    assert all(0 <= backoff.next_delay() <= cap for _ in range(attempts))


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(5, 1)
