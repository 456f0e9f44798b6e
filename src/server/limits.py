"""Abuse limits as plain objects: an event token bucket and a per-identity call counter."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up. Pure but for the injectable clock."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class CallLimiter:
    """At most ``limit`` concurrent calls per identity (gRPC's own limit is per server and bypassable)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._active: dict[Hashable, int] = {}

    def acquire(self, identity: Hashable) -> bool:
        count = self._active.get(identity, 0)
        if count >= self.limit:
            return False
        self._active[identity] = count + 1
        return True

    def release(self, identity: Hashable) -> None:
        count = self._active.get(identity, 0) - 1
        if count > 0:
            self._active[identity] = count
        else:
            self._active.pop(identity, None)

    def active(self, identity: Hashable) -> int:
        return self._active.get(identity, 0)
