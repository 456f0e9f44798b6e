"""Keep one noisy client from flooding the log: a few lines per key per window, then a tally.

Metrics still count every event; the log only needs enough to see who and why.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

DEFAULT_BURST = 5
DEFAULT_WINDOW_S = 60.0
DEFAULT_MAX_KEYS = 4096  # bounded memory whatever an attacker varies


class _Window:
    __slots__ = ("logged", "started", "suppressed")

    def __init__(self, started: float) -> None:
        self.started = started
        self.logged = 0
        self.suppressed = 0


class SampledLog:
    """``admit(key)`` says whether to write this line and how many were held back before it."""

    def __init__(
        self,
        burst: int = DEFAULT_BURST,
        window_s: float = DEFAULT_WINDOW_S,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = burst
        self._window_s = window_s
        self._max_keys = max_keys
        self._clock = clock
        self._windows: OrderedDict[Hashable, _Window] = OrderedDict()

    def admit(self, key: Hashable) -> int | None:
        """None: drop this line. Otherwise log it, noting the returned count of lines held back."""
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window.started >= self._window_s:
            held_back = window.suppressed if window is not None else 0
            window = _Window(now)
            self._windows[key] = window
            self._windows.move_to_end(key)
            while len(self._windows) > self._max_keys:
                self._windows.popitem(last=False)
            window.logged = 1
            return held_back
        if window.logged < self._burst:
            window.logged += 1
            return 0
        window.suppressed += 1
        return None
