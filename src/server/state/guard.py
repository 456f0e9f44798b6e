"""What a failing state store means for live devices: they keep working; nothing is lost or leaked.

* Live state is in memory. ``mode_later`` / ``telemetry_later`` queue the change
  (the newest per device, with the session it was made in) and a writer task
  lands it through the store's compare-and-set intents, retrying until the
  store works again. They never raise, so a full disk can never break a button
  press or an eviction.
* ``claim_now`` is for what truly needs the store (a new session must be
  durable before its token is issued): it raises ``StoreUnavailable``.
* ``load`` reads the store and lays queued changes over it (read-your-writes);
  a store failure is ``StoreUnavailable``.
* ``healthy`` turns False on the first failure and back by itself once a write
  lands; readiness follows it (``on_health``).

All writes are serialised by one lock so a change never overtakes another.
The writer takes it for at most ``FLUSH_BATCH`` queued changes at a time: after
an outage the backlog is long, and a CreateSession's claim (in the reconnect
storm that follows) waits for one batch, not for the whole backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from auth.identity import Identity
from server import metrics
from server.errors import StoreResetting, StoreUnavailable, describe
from server.state.outage import STORE, Outage
from server.state.store import DeviceRecord, DeviceStore, Renewal, Telemetry
from server.supervision import TaskOwner

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_S = 1.0
CLOSE_FLUSH_S = 2.0
FLUSH_BATCH = 50  # queued changes landed per hold of the write lock; claims waiting go in between


@dataclass
class PendingChange:
    """Changes to one device made in one session, not yet in the store."""

    session_id: str | None
    fields: dict[str, object] = field(default_factory=dict)  # DeviceRecord field -> value
    version: int = 0  # bumped on every change: a write in flight cannot drop a newer one

    def over(self, record: DeviceRecord) -> DeviceRecord:
        """``record`` as it will be once this lands (if the session still matches)."""
        if self.session_id is not None and record.session_id != self.session_id:
            return record
        return record.with_changes(**self.fields) if self.fields else record


class StoreGuard:
    """Owned by the app: ``start()``, ``close()``."""

    def __init__(
        self,
        store: DeviceStore,
        retry_s: float = RETRY_S,
        on_health: Callable[[bool], None] | None = None,
    ) -> None:
        self.store = store
        self._outage = Outage(STORE, log)
        self._retry_s = retry_s
        self._on_health = on_health or (lambda healthy: None)
        self._pending: dict[Identity, PendingChange] = {}
        self._write_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks = TaskOwner("store-guard")
        metrics.track_store(self)

    @property
    def healthy(self) -> bool:
        """False from the first failure until a write lands again."""
        return not self._outage.ongoing

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._tasks.supervise("store-writer", self._run)

    async def close(self) -> None:
        """Land what is queued if the store lets us (bounded), then close the store."""
        await self._tasks.close()
        if self._pending:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_FLUSH_S):
                    await self._flush()
        if self._pending:
            log.error("store.unsaved_at_exit", extra={"records": len(self._pending)})
        await self.store.close()

    # --- reads --------------------------------------------------------------

    async def load(self, identity: Identity) -> DeviceRecord | None:
        try:
            record = await self.store.load(identity)
        except Exception as exc:
            self._failed("load", exc)
            raise StoreUnavailable("state store unavailable") from None
        queued = self._pending.get(identity)
        if queued is None:
            return record
        return queued.over(record or DeviceRecord(identity, session_id=queued.session_id))

    # --- writes -------------------------------------------------------------

    def mode_later(self, identity: Identity, session_id: str | None, mode: int) -> None:
        self.update_later(identity, session_id, mode=mode)

    def telemetry_later(self, identity: Identity, session_id: str | None, telemetry: Telemetry) -> None:
        self.update_later(identity, session_id, **telemetry.fields())

    def update_later(self, identity: Identity, session_id: str | None, **changes: object) -> None:
        """Queue ``changes`` (DeviceRecord fields) made in ``session_id``; never raises."""
        self._change(identity, session_id).fields.update(changes)

    def _change(self, identity: Identity, session_id: str | None) -> PendingChange:
        queued = self._pending.get(identity)
        if queued is None or queued.session_id != session_id:
            queued = self._pending[identity] = PendingChange(session_id)  # an older session's change is moot
        queued.version += 1
        self._wake.set()
        return queued

    async def claim_now(
        self, identity: Identity, session_id: str, facts: dict[str, object] | None = None
    ) -> int:
        """Make ``session_id`` the device's session in the store before returning; the new epoch
        (0: the device is revoked and gets no session)."""
        async with self._write_lock:
            epoch = await self._now("claim", self.store.claim_session(identity, session_id, facts))
        self._recovered()
        return epoch

    async def update_now(
        self, identity: Identity, changes: dict[str, object], session_id: str | None = None
    ) -> bool:
        """An operator's change: in the store before returning (``StoreUnavailable`` otherwise)."""
        async with self._write_lock:
            applied = await self._now("update", self.store.update(identity, changes, session_id))
        self._recovered()
        return applied

    async def renewal_now(self, identity: Identity, renewal: Renewal) -> None:
        """A renewed certificate: on record before the device gets it (``StoreUnavailable`` otherwise)."""
        async with self._write_lock:
            await self._now("renewal", self.store.record_renewal(identity, renewal))
        self._recovered()

    async def renewal_failed_now(self, identity: Identity, reason: str, at: float) -> None:
        """A refused renewal, on record for operators (``StoreUnavailable`` if the store is away)."""
        async with self._write_lock:
            await self._now("renewal", self.store.record_renewal_failure(identity, reason, at))
        self._recovered()

    async def list_devices(self, tenant: str | None) -> list[DeviceRecord]:
        records = await self._now("list", self.store.list_devices(tenant))
        return [self._pending[r.identity].over(r) if r.identity in self._pending else r for r in records]

    async def _now(self, op: str, work: Awaitable[T]) -> T:
        try:
            return await work
        except StoreResetting:
            raise  # the store answers; it is being restored (store_generation), not failing
        except Exception as exc:
            self._failed(op, exc)
            raise StoreUnavailable("state store unavailable") from None

    async def check(self) -> str | None:
        """The periodic probe: does the store take a write now? Health follows either way;
        the error (for logs only, it may name an address) or None."""
        try:
            await self.store.probe()
        except Exception as exc:
            self._failed("probe", exc)
            return describe(exc)
        self._recovered()
        return None

    async def _flush(self) -> None:
        """Land every queued change, ``FLUSH_BATCH`` per hold of the write lock (claims waiting for
        it go between batches); stop at the first failure (the store is down for all)."""
        queued = list(self._pending.items())
        for start in range(0, len(queued), FLUSH_BATCH):
            async with self._write_lock:
                for identity, change in queued[start : start + FLUSH_BATCH]:
                    await self._land(identity, change)
        if not self.healthy:
            async with self._write_lock:
                await self.store.probe()  # nothing queued still has to prove writes work again

    async def _land(self, identity: Identity, change: PendingChange) -> None:
        if self._pending.get(identity) is not change:
            return  # replaced by a newer session's change since this flush began: that one lands next
        version, fields = change.version, dict(change.fields)
        landed = await self.store.update(identity, fields, change.session_id) if fields else True
        if not landed:  # another session (here or on another replica) owns the device now
            log.info(
                "store.change_superseded", extra={"tenant": identity.tenant, "device": identity.device_id}
            )
        if self._pending.get(identity) is change and change.version == version:
            del self._pending[identity]

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except Exception as exc:
                self._failed("save", exc)
                self._wake.set()  # try again after the pause
                await asyncio.sleep(self._retry_s)
                continue
            self._recovered()

    def _failed(self, op: str, exc: Exception) -> None:
        metrics.STORE_ERRORS.labels(op=op).inc()
        if self._outage.lost(op=op, error=describe(exc), pending=self.pending):
            self._on_health(False)
        self._wake.set()  # the writer keeps probing until a write lands

    def _recovered(self) -> None:
        if self._outage.restored(pending=len(self._pending)):
            self._on_health(True)
