"""Bus messages handled per device: in order for one device, concurrently across devices.

The Redis subscriber must keep reading while a handler works (a Play can read
and decode a tenant sound for a quarter of a second): a slow command for one
device must not hold up a supersede, a revocation or a reply for another.
``KeyedDispatcher.submit`` queues a message under its device and returns at
once; one short-lived task per device with queued messages handles them in
order and exits when its queue is empty.

Bounded: at most ``limit`` messages wait in all. Overflow policy: the newest
message is refused (logged, sampled, and counted in ``audio_bus_dropped_total``);
what is already queued keeps its order. A refused command times out for its
operator (``UNAVAILABLE``, try again); a refused change is caught up by the next
one or the resync; a refused supersede or revocation is still enforced by the
session check of every call, which asks the shared store.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from comms.log_sampling import SampledLog
from server import metrics
from server.supervision import TaskOwner

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000  # messages waiting for their device's turn, all devices together
M = TypeVar("M")
Key = tuple[str, str]  # (tenant, device); ("", "") for fleet-wide messages and replies
_overflows = SampledLog()


class KeyedDispatcher(Generic[M]):
    """Owned by the bus: ``submit`` from the subscriber loop, ``close`` at shutdown."""

    def __init__(
        self,
        handle: Callable[[M], Awaitable[None]],
        key: Callable[[M], Key],
        limit: int = QUEUE_LIMIT,
    ) -> None:
        self._handle = handle
        self._key = key
        self.limit = limit
        self.queued = 0
        self._queues: dict[Key, deque[M]] = {}
        self._working: set[Key] = set()  # keys whose worker task runs
        self._tasks = TaskOwner("bus-dispatch")

    def submit(self, message: M) -> bool:
        """Queue ``message`` behind its device's earlier ones; False (and counted) when full."""
        if self.queued >= self.limit:
            metrics.BUS_DROPPED.inc()
            held_back = _overflows.admit("full")
            if held_back is not None:
                log.warning("bus.queue_full", extra={"limit": self.limit, "suppressed": held_back})
            return False
        key = self._key(message)
        self._queues.setdefault(key, deque()).append(message)
        self.queued += 1
        if key not in self._working:
            self._working.add(key)
            self._tasks.spawn(self._work(key), "device")
        return True

    async def _work(self, key: Key) -> None:
        queue = self._queues[key]
        try:
            while queue:
                message = queue.popleft()
                self.queued -= 1
                await self._handle(message)  # the handler logs its own failures
        finally:
            self._working.discard(key)
            if not queue:
                self._queues.pop(key, None)
            else:  # cancelled with messages left: they are dropped with it
                self.queued -= len(self._queues.pop(key, queue))

    async def idle(self) -> None:
        """Wait until every queued message was handled (tests and shutdown)."""
        await self._tasks.join()

    async def close(self) -> None:
        await self._tasks.close()
