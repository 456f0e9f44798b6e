"""Reconnect delays: exponential backoff with full jitter, capped, reset after a stable connection.

delay(n) = uniform(0, min(cap, base * 2**n)) for the n-th consecutive failure
(AWS Architecture Blog, "Exponential Backoff And Jitter"). A connection that
stayed up for ``stable_after_s`` resets n to 0. Pure: the random source is
injectable, so tests check the exact schedule.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_BASE_S = 0.5
DEFAULT_CAP_S = 30.0
DEFAULT_STABLE_AFTER_S = 10.0


@dataclass
class Backoff:
    base_s: float = DEFAULT_BASE_S
    cap_s: float = DEFAULT_CAP_S
    stable_after_s: float = DEFAULT_STABLE_AFTER_S
    uniform: Callable[[float, float], float] = field(default=random.uniform, repr=False)
    failures: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError("backoff needs 0 < base <= cap")

    def ceiling(self) -> float:
        """The largest delay the next failure can get."""
        return min(self.cap_s, self.base_s * 2 ** min(self.failures, 32))

    def next_delay(self, connected_for_s: float = 0.0) -> float:
        """Delay before the next attempt, given how long the last connection stayed up."""
        if connected_for_s >= self.stable_after_s:
            self.failures = 0
        delay = self.uniform(0.0, self.ceiling())
        self.failures += 1
        return delay
