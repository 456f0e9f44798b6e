"""What one server process must tell the others: the fleet bus.

Messages: a device's session was superseded (end its old streams where they
are), certificates or a device were revoked (end their streams everywhere), a
command for a device (apply it where the device is connected) and its reply, a
device changed (for watchers: connected, disconnected, mode, playing, battery).

* ``InProcessBus``: one process; delivers to its own subscribers.
* ``RedisBus``: Redis pub/sub, one channel per node plus one broadcast channel
  (never one per device). The subscriber loop is supervised and resubscribes by
  itself after Redis comes back. What was published meanwhile is lost: the
  shared store makes that harmless for sessions (the session check of every
  call asks it), and ``on_restored`` lets each node re-announce its live
  devices so watchers catch up. Received messages are handled per device
  (``bus_dispatch``): in order for one device, concurrently across devices.

Every node has an id (``node_id``: host and pid by default, so replicas and
worker processes differ); messages carry their origin so a node can ignore
what it sent itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.errors import describe
from server.fleet.bus_dispatch import KeyedDispatcher
from server.state.outage import BUS, Outage
from server.supervision import HealthCallback, TaskOwner

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "audio:v1:bus:"
RESUBSCRIBE_S = 1.0
BROADCAST = f"{CHANNEL_PREFIX}all"
SUPERSEDED, REVOKED, COMMAND, CHANGED, REPLY = "superseded", "revoked", "command", "changed", "reply"


def node_channel(node_id: str) -> str:
    return f"{CHANNEL_PREFIX}node:{node_id}"


@dataclass(frozen=True)
class BusMessage:
    kind: str
    origin: str  # node id of the sender
    tenant: str = ""
    device: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str | bytes) -> BusMessage:
        value = json.loads(raw)
        return cls(
            str(value["kind"]),
            str(value["origin"]),
            str(value["tenant"]),
            str(value["device"]),
            dict(value["data"]),
        )


Handler = Callable[[BusMessage], Awaitable[None]]


class FleetBus:
    """The interface; ``InProcessBus`` is also the base of ``RedisBus`` (local delivery)."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._handlers: list[Handler] = []
        self._restored: list[Callable[[], None]] = []

    def on_restored(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever the bus is back after an outage (messages were lost)."""
        self._restored.append(callback)

    def subscribe(self, handler: Handler) -> Callable[[], None]:
        """Call ``handler`` for every message this node receives; returns the unsubscribe."""
        self._handlers.append(handler)
        return lambda: self._handlers.remove(handler) if handler in self._handlers else None

    async def publish(self, message: BusMessage, node: str | None = None) -> None:
        """To ``node`` (its channel), or to every node when None."""
        raise NotImplementedError

    async def deliver(self, message: BusMessage) -> None:
        for handler in list(self._handlers):
            try:
                await handler(message)
            except Exception:
                log.exception("bus.handler_failed", extra={"kind": message.kind, "device": message.device})

    async def start(self, on_failing: HealthCallback | None = None) -> None:
        return None

    async def close(self) -> None:
        return None


class InProcessBus(FleetBus):
    async def publish(self, message: BusMessage, node: str | None = None) -> None:
        if node is None or node == self.node_id:
            await self.deliver(message)


class RedisBus(FleetBus):
    def __init__(self, node_id: str, client: aioredis.Redis) -> None:
        super().__init__(node_id)
        self._redis = client
        self._tasks = TaskOwner("bus")
        # Handled per device, off the subscriber loop: a slow handler never stalls the others.
        self.dispatch = KeyedDispatcher(self.deliver, lambda m: (m.tenant, m.device))
        self.subscribed = asyncio.Event()  # set while the subscription is live (tests wait on it)
        self._first_try = asyncio.Event()  # the first subscription attempt is over, either way

    async def publish(self, message: BusMessage, node: str | None = None) -> None:
        channel = BROADCAST if node is None else node_channel(node)
        await self._redis.publish(channel, message.encode())

    async def start(self, on_failing: HealthCallback | None = None) -> None:
        self._tasks.supervise("bus", self._listen, on_failing)
        async with asyncio.timeout(5):  # subscribed, or Redis is away: the server starts unready, retrying
            await self._first_try.wait()

    async def _listen(self) -> None:
        """Subscribe and deliver; a lost Redis is one warning, retried every second, one on return."""
        outage = Outage(BUS, log)
        while True:
            try:
                await self._subscribed_loop(outage)
            except (RedisError, OSError) as exc:
                outage.lost(error=describe(exc))
                self._first_try.set()
                await asyncio.sleep(RESUBSCRIBE_S)

    async def _subscribed_loop(self, outage: Outage) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(BROADCAST, node_channel(self.node_id))
            self.subscribed.set()
            self._first_try.set()
            if outage.restored(node=self.node_id):
                for callback in self._restored:
                    callback()
            while True:
                raw = await pubsub.get_message(timeout=1.0)
                if raw is None or raw.get("type") != "message":
                    continue
                try:
                    message = BusMessage.decode(raw["data"])
                except (ValueError, KeyError, TypeError):
                    log.warning("bus.bad_message", extra={"channel": str(raw.get("channel"))[:80]})
                    continue
                self.dispatch.submit(message)
        finally:
            self.subscribed.clear()
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    async def close(self) -> None:
        await self._tasks.close()
        await self.dispatch.close()
