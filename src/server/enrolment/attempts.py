"""Attempts per client address: a few a minute, then refused for a while.

Used twice by the enrolment service: for *failed* attempts (codes carry 80 random bits, so
guessing one is hopeless anyway; the limit keeps a flood from costing the store a lookup per try
and the audit log an entry per try) and for open-enrolment *claims* (each one queues a request in
the store, so even good ones are limited). Per process (each replica counts its own); memory is
bounded by forgetting the least recently seen addresses.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

WINDOW_S = 60.0
ADDRESSES_REMEMBERED = 65_536


class PerAddress:
    def __init__(self, per_window: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_window = per_window
        self._clock = clock
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str) -> deque[float]:
        times = self._seen.setdefault(address, deque())
        self._seen.move_to_end(address)
        cutoff = self._clock() - WINDOW_S
        while times and times[0] <= cutoff:
            times.popleft()
        while len(self._seen) > ADDRESSES_REMEMBERED:
            self._seen.popitem(last=False)
        return times

    def blocked(self, address: str) -> bool:
        """Whether ``address`` used up its attempts of the last minute."""
        return len(self._recent(address)) >= self.per_window

    def count(self, address: str) -> bool:
        """Count one attempt; True when it is the one that blocks the address (audited once)."""
        times = self._recent(address)
        times.append(self._clock())
        return len(times) == self.per_window

    failed = count  # what the failed-attempts limiter counts


FailedAttempts = PerAddress
