"""Noticing that the shared store lost its data, and putting back what must never be forgotten.

Redis restarted without persistence, a failover to an empty replica, a lost
volume or a FLUSHALL: every key is gone, the operator deny-list (the devices'
``revoked`` flags) included, and a revoked device would get a session again.
So every node keeps:

* a generation marker, ``audio:v1:generation``, written ``SET NX`` at the first
  start and remembered by each node;
* a mirror of the deny-list (the records of revoked devices): loaded at start,
  kept current from the fleet's device changes (``revoked`` / ``unrevoked``).

When a node sees the marker missing or changed (every ``CHECK_INTERVAL_S``,
when the bus is back after an outage, and before admitting a device its mirror
says is revoked) it logs ``store.reset_detected`` (error), counts it, flags
readiness and admits no new session (revoked devices ``PERMISSION_DENIED``,
the rest ``UNAVAILABLE``) until it has restored the deny-list from its mirror,
written back the records of the devices live on it (their mode and session
are in its memory), rewritten the marker and written an audit event saying
the history before was lost. Every step is idempotent, so several nodes may
do it at once. If every node restarted while the store was empty, nothing is
left to restore from: run Redis with persistence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid

import redis.asyncio as aioredis

from auth.identity import Identity
from server import metrics
from server.devices.registry import DeviceRegistry
from server.errors import STORE_UNAVAILABLE_TEXT, StoreResetting, StoreUnavailable
from server.fleet.device_view import DeviceView
from server.fleet.node import Fleet
from server.operator.audit import AuditEvent, AuditLog
from server.state.redis_store import KEY_PREFIX, TENANTS_KEY, device_key, tenant_devices_key
from server.state.store import DeviceRecord, DeviceStore, Renewal, Telemetry, stored_value
from server.supervision import HealthCallback

log = logging.getLogger(__name__)

GENERATION_KEY = f"{KEY_PREFIX}generation"
CHECK_INTERVAL_S = 2.0
PROBLEM = "store-reset"  # the readiness flag while the deny-list is being restored
RESET_ACTION = "store:reset"
_KEPT_BY_CLAIM = ("session_id", "epoch")

# KEYS[1] = device hash, KEYS[2] = the tenant's device index, KEYS[3] = the tenant index.
# ARGV[1] = 'revoked' | 'live', ARGV[2] = session id ('' for none), ARGV[3] = epoch,
# ARGV[4] = device id, ARGV[5] = tenant, then field/value pairs (JSON values).
# A revoked device's record is written back, or only marked revoked if a record came back already;
# a live device's only while no other session took the device meanwhile. Epochs never go down.
_RESTORE = """
local current = redis.call('HGET', KEYS[1], 'session_id')
if ARGV[1] == 'live' and current and current ~= ARGV[2] then return 0 end
local exists = redis.call('EXISTS', KEYS[1]) == 1
if ARGV[1] == 'revoked' and exists then
    redis.call('HSET', KEYS[1], 'revoked', 'true')
else
    if #ARGV > 5 then redis.call('HSET', KEYS[1], unpack(ARGV, 6)) end
    if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'session_id', ARGV[2]) end
end
local epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
if epoch < tonumber(ARGV[3]) then redis.call('HSET', KEYS[1], 'epoch', ARGV[3]) end
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[5])
return 1
"""


def _restore_args(kind: str, record: DeviceRecord) -> list[str]:
    pairs: list[str] = []
    for name, value in record.fields().items():
        if name not in _KEPT_BY_CLAIM:
            pairs += [name, json.dumps(stored_value(name, value))]
    identity = record.identity
    epoch = max(record.epoch, 1)  # listed (epoch > 0) like every device that ever had a session
    return [kind, record.session_id or "", str(epoch), identity.device_id, identity.tenant, *pairs]


class StoreGeneration:
    """One per node with a Redis store. Owned by the app: ``start``, then ``run`` (supervised)."""

    def __init__(
        self, client: aioredis.Redis, on_problem: HealthCallback, interval_s: float = CHECK_INTERVAL_S
    ) -> None:
        self._redis = client
        self._restore_script = client.register_script(_RESTORE)
        self._on_problem = on_problem
        self._interval_s = interval_s
        self.audit: AuditLog | None = None  # set once the app has one
        self.generation: str | None = None
        self.resetting = False
        self.resets = 0
        self.denied: dict[Identity, DeviceRecord] = {}  # the mirror of the deny-list
        self._lock = asyncio.Lock()
        self.started = asyncio.Event()  # ``start`` done: a server started before Redis does it later
        self._wake = asyncio.Event()

    # --- start and upkeep -------------------------------------------------------------

    async def start(self, store: DeviceStore, registry: DeviceRegistry, fleet: Fleet) -> None:
        """Remember (or write, at the very first start) the marker; load the deny-list."""
        self._registry, self._fleet = registry, fleet
        created = await self._redis.set(GENERATION_KEY, uuid.uuid4().hex, nx=True)
        self.generation = str(await self._redis.get(GENERATION_KEY))
        records = await store.list_devices(None)
        self.denied = {r.identity: r for r in records if r.revoked}
        if created and records:
            log.error(
                "store.generation_missing",
                extra={
                    "devices": len(records),
                    "revoked": len(self.denied),
                    "meaning": "the store holds devices but no generation marker: data may have been lost "
                    "while no node was running; check the deny-list",
                },
            )
        self._fleet.watch(self._changed)
        self._fleet.bus.on_restored(self._wake.set)  # Redis is back: was it emptied meanwhile?
        self.started.set()

    async def _changed(self, view: DeviceView, change: str) -> None:
        record = view.record
        if record.revoked:
            self.denied[record.identity] = record
        elif change == "unrevoked":
            self.denied.pop(record.identity, None)

    async def run(self) -> None:
        """The periodic check (supervised by the app), from the moment ``start`` has run."""
        await self.started.wait()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.check()
            except StoreUnavailable:
                continue  # down again: the next check (or the bus's return) tries again

    # --- detection ---------------------------------------------------------------

    async def check(self) -> bool:
        """True if the marker is this node's; otherwise restore (the store lost its data)."""
        found = await self._marker()
        if found is not None and str(found) == self.generation and not self.resetting:
            return True
        async with self._lock:
            found = await self._marker()
            if found is not None and str(found) == self.generation and not self.resetting:
                return True  # another check of this node restored it meanwhile
            await self._reset(None if found is None else str(found))
        return False

    async def _marker(self) -> str | None:
        try:
            found = await self._redis.get(GENERATION_KEY)
        except Exception:
            raise StoreUnavailable(STORE_UNAVAILABLE_TEXT) from None
        return None if found is None else str(found)

    async def _reset(self, found: str | None) -> None:
        if not self.resetting:
            self.resetting = True
            self.resets += 1
            metrics.STORE_RESETS.inc()
            self._on_problem(PROBLEM, True)
            log.error(
                "store.reset_detected",
                extra={
                    "generation": self.generation,
                    "found": found,
                    "revocations_known": len(self.denied),
                    "meaning": "the shared store lost its data: no new sessions until the deny-list "
                    "is restored from this node's memory",
                },
            )
        try:
            live_records = self._live_records()
            revoked = await self._restore("revoked", list(self.denied.values()))
            live = await self._restore("live", live_records)
            await self._redis.set(GENERATION_KEY, uuid.uuid4().hex, nx=True)  # the first node's wins
            self.generation = str(await self._redis.get(GENERATION_KEY))
        except Exception:
            raise StoreUnavailable(STORE_UNAVAILABLE_TEXT) from None
        await self._audit(found, revoked, [r.identity for r in live_records])
        self._fleet.resync()  # the leases went with the data: live devices must not look offline
        self.resetting = False
        self._on_problem(PROBLEM, False)
        log.warning(
            "store.reset_restored",
            extra={
                "revocations_restored": revoked,
                "live_devices_restored": live,
                "generation": self.generation,
            },
        )

    def _live_records(self) -> list[DeviceRecord]:
        records = []
        for session in self._registry.live_sessions():
            controller = self._registry.controller(session.identity)
            if controller is not None:
                records.append(controller.record)
        return records

    async def _restore(self, kind: str, records: list[DeviceRecord]) -> int:
        restored = 0
        for record in records:
            identity = record.identity
            keys = [device_key(identity), tenant_devices_key(identity.tenant), TENANTS_KEY]
            restored += int(await self._restore_script(keys=keys, args=_restore_args(kind, record)))
        return restored

    async def _audit(self, found: str | None, revoked: int, live: list[Identity]) -> None:
        """Say in every affected tenant's audit log (and the platform's) what was lost."""
        if self.audit is None:
            return
        tenants = sorted({i.tenant for i in self.denied} | {i.tenant for i in live})
        for tenant in tenants or [""]:
            await self.audit.record(
                AuditEvent(
                    operator="",
                    role="",
                    tenant=tenant,
                    action=RESET_ACTION,
                    target="",
                    parameters={
                        "revocations_restored": sum(1 for i in self.denied if i.tenant == tenant),
                        "live_devices_restored": sum(1 for i in live if i.tenant == tenant),
                        "node": self._fleet.node_id,
                        "marker_found": found or "",
                    },
                    result="OK",
                    message=(
                        "the shared state store lost its data: the audit history before this event was "
                        f"lost; {revoked} revocation(s) restored from a server node's memory"
                    ),
                )
            )

    # --- admission -----------------------------------------------------------------

    async def admit(self, identity: Identity) -> bool:
        """May ``identity`` claim a session now? False: revoked (this node remembers it);
        ``StoreResetting`` while the deny-list is being restored."""
        if identity in self.denied and await self.check():
            return True  # the store is intact: its word (an unrevoke, maybe) decides
        if self.resetting:
            if identity in self.denied:
                return False
            raise StoreResetting(STORE_UNAVAILABLE_TEXT)
        return True


class GenerationCheckedStore:
    """The Redis store with ``claim_session`` gated by ``StoreGeneration.admit``."""

    def __init__(self, store: DeviceStore, generation: StoreGeneration) -> None:
        self.store = store
        self._generation = generation

    async def claim_session(
        self, identity: Identity, session_id: str, facts: dict[str, object] | None = None
    ) -> int:
        if not await self._generation.admit(identity):
            return 0  # revoked, as far as this node remembers: no session
        return await self.store.claim_session(identity, session_id, facts)

    async def load(self, identity: Identity) -> DeviceRecord | None:
        return await self.store.load(identity)

    async def list_devices(self, tenant: str | None) -> list[DeviceRecord]:
        return await self.store.list_devices(tenant)

    async def update(self, identity: Identity, changes: dict[str, object], session_id: str | None) -> bool:
        return await self.store.update(identity, changes, session_id)

    async def set_mode(self, identity: Identity, mode: int, session_id: str | None) -> bool:
        return await self.store.set_mode(identity, mode, session_id)

    async def record_telemetry(
        self, identity: Identity, telemetry: Telemetry, session_id: str | None
    ) -> bool:
        return await self.store.record_telemetry(identity, telemetry, session_id)

    async def record_renewal(self, identity: Identity, renewal: Renewal) -> bool:
        return await self.store.record_renewal(identity, renewal)

    async def record_renewal_failure(self, identity: Identity, reason: str, at: float) -> bool:
        return await self.store.record_renewal_failure(identity, reason, at)

    async def probe(self) -> None:
        await self.store.probe()

    async def close(self) -> None:
        await self.store.close()
