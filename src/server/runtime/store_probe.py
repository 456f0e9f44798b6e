"""Readiness follows the state store unasked, and a server started before its store waits for it.

The guard learns of an outage only when something uses the store; with no
traffic, readiness would say SERVING through the first seconds of an outage.
``StoreProbe`` writes a probe every ``interval_s`` (a supervised loop), so
readiness turns NOT_SERVING by itself and back once the store takes writes.

At start-up the first probe runs before anything is served. If it fails the
server starts anyway, unready (liveness stays SERVING: restarting the process
cannot bring Redis back, and a crash loop's back-off would keep devices away
long after it returns). While the store is down the guard's writer retries it
every ``store_retry_s`` and turns health back on success; this loop then only
watches, at a capped backoff, logging a sampled ``store.waiting`` line. ``start_timeout_s`` > 0 bounds that
first wait: then ``gave_up`` is set with one clear line and the entry point
exits 1. Once the store has been reached, outages never end the process.
"""

from __future__ import annotations

import asyncio
import logging
import time

from server.runtime.settings import ServerSettings
from server.state.guard import StoreGuard
from server.state.redis_store import redacted

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.25
LOG_EVERY = 20  # attempts 1, 2, 4, 8, 16 are logged, then every 20th: a line per minute or two


def store_where(settings: ServerSettings) -> str:
    """The store as the exit line names it (never with a password)."""
    if settings.state_backend == "redis":
        return f"the Redis state store at {redacted(settings.redis_url)}"
    return f"the {settings.state_backend} state store"


def sampled(attempt: int) -> bool:
    """Log this attempt? The first ones (powers of two), then one in ``LOG_EVERY``."""
    return attempt & (attempt - 1) == 0 or attempt % LOG_EVERY == 0


def retry_delay(attempt: int, interval_s: float) -> float:
    """After the ``attempt``-th failure in a row: doubling from RETRY_FIRST_S, capped at the probe
    interval (a longer pause would leave the next outage unnoticed for longer after a recovery)."""
    return min(RETRY_FIRST_S * 2 ** min(attempt - 1, 16), interval_s)


class StoreProbe:
    """Owned by the app: ``await first()`` before serving, then ``run`` as a supervised loop."""

    def __init__(
        self, guard: StoreGuard, where: str, interval_s: float, start_timeout_s: float = 0.0
    ) -> None:
        self._guard = guard
        self._where = where  # "the Redis state store at redis://…" (no password): for the exit line
        self._interval_s = interval_s
        self._start_timeout_s = start_timeout_s
        self._since = time.monotonic()
        self.reached = asyncio.Event()  # the store took a write at least once
        self.gave_up = asyncio.Event()  # start-up wait exceeded: ``reason`` says why, the process exits 1
        self.reason = ""
        self.failures = 0  # in a row
        self._error: str | None = None

    async def first(self) -> bool:
        """The start-up probe: True when the store works now, else the server starts unready."""
        if await self._attempt():
            return True
        log.error(
            "store.unreachable_at_start",
            extra={"store": self._where, "error": self._error, "start_timeout_s": self._start_timeout_s},
        )
        return False

    async def run(self) -> None:
        while not self.gave_up.is_set():
            delay = self._interval_s if not self.failures else retry_delay(self.failures, self._interval_s)
            await asyncio.sleep(delay)
            await self._attempt()

    async def _attempt(self) -> bool:
        # While the guard knows the store is down its writer retries every store_retry_s (and turns
        # health back): a probe of ours on top would only queue behind it (SQLite has one thread).
        error = await self._guard.check() if self._guard.healthy else self._error
        if error is None:
            if not self.reached.is_set() and self.failures:  # the start-up wait is over
                log.warning(
                    "store.reached",
                    extra={"store": self._where, "attempts": self.failures + 1, "waited_s": self._waited()},
                )
            self.reached.set()
            self.failures, self._error = 0, None
            return True
        if not self.failures:
            self._since = time.monotonic()
        self.failures += 1
        self._error = error
        if sampled(self.failures):
            log.warning(
                "store.waiting",
                extra={
                    "store": self._where,
                    "attempt": self.failures,
                    "waited_s": self._waited(),
                    "retry_in_s": retry_delay(self.failures, self._interval_s),
                    "error": error,
                },
            )
        if not self.reached.is_set() and self._start_timeout_s and self._waited() >= self._start_timeout_s:
            self.reason = (
                f"cannot reach {self._where} within {self._start_timeout_s:g} s "
                f"(store_start_timeout_s; last error {error}); "
                "check --redis-url, the password file and that Redis is running"
            )
            log.error("store.gave_up", extra={"store": self._where, "waited_s": self._waited()})
            self.gave_up.set()
        return False

    def give_up(self, reason: str) -> None:
        """Start-up work that needed the store found it cannot go on (one line; the process exits 1)."""
        self.reason = reason
        self.gave_up.set()

    def _waited(self) -> float:
        return round(time.monotonic() - self._since, 1)
