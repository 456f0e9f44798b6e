"""Presence: which node holds each device's live session, under a lease.

The holder writes ``audio:v1:presence:<tenant>:<device> = <node id>`` with a
TTL of ``lease_s`` when the session opens, refreshes every live device's lease
(one script call per 500 devices) every third of it, extending only leases that
are still its own or that nobody holds, and deletes it (only if still its own)
when the device leaves. A node that dies stops refreshing: its
devices read as offline within one lease. ``LocalPresence`` is the one-process
version (a dict).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from auth.identity import Identity
from server.errors import describe
from server.state.outage import PRESENCE, Outage

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 10.0
_RELEASE_IF_MINE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS = presence keys, ARGV[1] = node id, ARGV[2] = lease ms. Extends each lease still ours (as
# redis-py's Lock.extend does), or takes one nobody holds (it expired during an outage); never one
# another node holds: the device moved there. Returns how many leases are ours now.
_EXTEND_IF_MINE = """
local ours = 0
for _, key in ipairs(KEYS) do
    local holder = redis.call('GET', key)
    if holder == ARGV[1] or not holder then
        redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
        ours = ours + 1
    end
end
return ours
"""
REFRESH_BATCH = 500  # leases per script call: one long script would block Redis for everyone


def presence_key(identity: Identity) -> str:
    return f"audio:v1:presence:{identity.tenant}:{identity.device_id}"


class LocalPresence:
    def __init__(self, node_id: str, lease_s: float = DEFAULT_LEASE_S) -> None:
        self.node_id = node_id
        self.lease_s = lease_s
        self._held: set[Identity] = set()

    async def claim(self, identity: Identity) -> None:
        self._held.add(identity)

    async def release(self, identity: Identity) -> None:
        self._held.discard(identity)

    async def refresh(self, identities: Iterable[Identity]) -> None:
        return None

    async def holder(self, identity: Identity) -> str | None:
        return self.node_id if identity in self._held else None

    async def holders(self, identities: list[Identity]) -> list[str | None]:
        return [self.node_id if identity in self._held else None for identity in identities]


class RedisPresence:
    def __init__(self, node_id: str, client: aioredis.Redis, lease_s: float = DEFAULT_LEASE_S) -> None:
        self.node_id = node_id
        self.lease_s = lease_s
        self._redis = client
        self._release = client.register_script(_RELEASE_IF_MINE)
        self._extend = client.register_script(_EXTEND_IF_MINE)

    @property
    def _lease_ms(self) -> int:
        return int(self.lease_s * 1000)

    async def claim(self, identity: Identity) -> None:
        await self._redis.set(presence_key(identity), self.node_id, px=self._lease_ms)

    async def release(self, identity: Identity) -> None:
        await self._release(keys=[presence_key(identity)], args=[self.node_id])

    async def refresh(self, identities: Iterable[Identity]) -> None:
        """Extend the leases of devices live here, never one another node holds now (a blind SET
        would point presence back here after the device moved)."""
        keys = [presence_key(identity) for identity in identities]
        for start in range(0, len(keys), REFRESH_BATCH):
            await self._extend(keys=keys[start : start + REFRESH_BATCH], args=[self.node_id, self._lease_ms])

    async def holder(self, identity: Identity) -> str | None:
        value = await self._redis.get(presence_key(identity))
        return str(value) if value is not None else None

    async def holders(self, identities: list[Identity]) -> list[str | None]:
        """Each device's holder, in one round trip."""
        if not identities:
            return []
        values = await self._redis.mget([presence_key(identity) for identity in identities])
        return [str(value) if value is not None else None for value in values]


Presence = LocalPresence | RedisPresence


async def keep_leases(presence: Presence, live: Callable[[], Iterable[Identity]]) -> None:
    """The holder's loop: refresh the lease of every live device, three times per lease.

    Redis being away is expected, not a bug: one warning, then quiet until it answers again.
    """
    outage = Outage(PRESENCE, log)
    while True:
        await asyncio.sleep(presence.lease_s / 3)
        try:
            await presence.refresh(list(live()))
        except (RedisError, OSError) as exc:
            outage.lost(error=describe(exc))
            continue
        outage.restored(node=presence.node_id)
