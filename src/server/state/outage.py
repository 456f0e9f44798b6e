"""A backend lost and back again: one log line at each edge, quiet in between.

Three loops keep working through a store outage and report it the same way: the store guard's
writer (``store.unavailable`` / ``store.recovered``), the fleet bus subscriber (``bus.lost`` /
``bus.restored``) and the presence lease loop (``presence.lost`` / ``presence.restored``). Each
retries at its own pace, so what they share is this edge: ``lost`` logs only the first failure
of an outage, ``restored`` only the first success after one, and both say whether they did so the
caller can turn health or resync on that edge. The event names live here, once: alerts and
docs/operate/redis-down.md name them.

redis-py's ``Retry`` (with an ``ExponentialBackoff``) was considered and does not fit: it
retries one call a bounded number of times, for Redis errors only, and has no "back again" hook.
The guard serves SQLite too and waits to be woken rather than retrying a call, and the bus's work
is a subscription that may run for days before it fails; what they repeat is the edge, not a call.

This is the state layer (the lowest one after the kit) so the guard and the fleet can both use it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass


@dataclass(frozen=True)
class OutageEvents:
    lost: str
    restored: str
    lost_level: int = logging.WARNING


STORE = OutageEvents("store.unavailable", "store.recovered", logging.ERROR)
BUS = OutageEvents("bus.lost", "bus.restored")
PRESENCE = OutageEvents("presence.lost", "presence.restored")


class Outage:
    """Whether a backend is lost now; logs the edges to ``log`` (the caller's logger)."""

    def __init__(self, events: OutageEvents, log: logging.Logger) -> None:
        self.events = events
        self.ongoing = False
        self._log = log

    def lost(self, **edge_fields: object) -> bool:
        """A failure. True when it begins an outage (then logged with ``edge_fields``: keywords
        that are not ``LogRecord`` attributes; tests/test_log_fields.py checks every caller's)."""
        if self.ongoing:
            return False
        self.ongoing = True
        self._log.log(self.events.lost_level, self.events.lost, extra=edge_fields)
        return True

    def restored(self, **edge_fields: object) -> bool:
        """A success. True when it ends an outage (then logged with ``edge_fields``)."""
        if not self.ongoing:
            return False
        self.ongoing = False
        self._log.warning(self.events.restored, extra=edge_fields)
        return True
