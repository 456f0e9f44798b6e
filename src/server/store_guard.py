"""What a failing state store means for live devices: they keep working; nothing is lost or leaked.

* Live state is in memory; ``save_later`` queues the latest record of a device
  and a writer task lands it, retrying until the store works again. It never
  raises, so a full disk can never break a button press or an eviction.
* ``save_now`` is for what truly needs the store (a new session must be
  durable before its token is issued): it raises ``StoreUnavailable``.
* ``load`` answers from queued records first (read-your-writes), else from the
  store; a store failure is ``StoreUnavailable``.
* ``healthy`` turns False on the first failure and back by itself once a write
  lands; readiness follows it (``on_health``).

All writes are serialised by one lock so an older queued record never lands
after a newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from auth.identity import Identity
from comms.tasks import cancel_and_wait
from server import metrics
from server.errors import StoreUnavailable
from server.store import DeviceRecord, DeviceStore
from server.supervision import supervise

log = logging.getLogger(__name__)

RETRY_S = 1.0
CLOSE_FLUSH_S = 2.0


class StoreGuard:
    """Owned by the app: ``start()``, ``close()``."""

    def __init__(
        self,
        store: DeviceStore,
        retry_s: float = RETRY_S,
        on_health: Callable[[bool], None] | None = None,
    ) -> None:
        self.store = store
        self.healthy = True
        self._retry_s = retry_s
        self._on_health = on_health
        self._pending: dict[Identity, DeviceRecord] = {}
        self._write_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        metrics.track_store(self)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.create_task(supervise("store-writer", self._run), name="store-writer")

    async def close(self) -> None:
        """Land what is queued if the store lets us (bounded), then close the store."""
        await cancel_and_wait(self._task)
        if self._pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_FLUSH_S):
                    await self._flush()
        if self._pending:
            log.error("store.unsaved_at_exit", extra={"records": len(self._pending)})
        await self.store.close()

    async def load(self, identity: Identity) -> DeviceRecord | None:
        queued = self._pending.get(identity)
        if queued is not None:
            return queued
        try:
            return await self.store.load(identity)
        except Exception as exc:
            self._failed("load", exc)
            raise StoreUnavailable("state store unavailable") from None

    def save_later(self, record: DeviceRecord) -> None:
        """Queue ``record`` (the newest per device wins); the writer lands it, retrying. Never raises."""
        self._pending[record.identity] = record
        self._wake.set()

    async def save_now(self, record: DeviceRecord) -> None:
        """Land ``record`` before returning, or raise ``StoreUnavailable``."""
        async with self._write_lock:
            try:
                await self.store.save(record)
            except Exception as exc:
                self._failed("save", exc)
                raise StoreUnavailable("state store unavailable") from None
            queued = self._pending.get(record.identity)
            if queued is not None and queued.updated_at <= record.updated_at:
                del self._pending[record.identity]  # superseded by what just landed
        self._recovered()

    async def _flush(self) -> None:
        """Land every queued record; stop at the first failure (the store is down for all)."""
        async with self._write_lock:
            for identity, record in list(self._pending.items()):
                await self.store.save(record)
                if self._pending.get(identity) is record:
                    del self._pending[identity]
            if not self.healthy:
                await self.store.probe()  # nothing queued still has to prove writes work again

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
        if self.healthy:
            self.healthy = False
            log.error(
                "store.unavailable",
                extra={
                    "op": op,
                    "error": f"{type(exc).__name__}: {exc}"[:200],
                    "pending": len(self._pending),
                },
            )
            if self._on_health is not None:
                self._on_health(False)
        self._wake.set()  # the writer keeps probing until a write lands

    def _recovered(self) -> None:
        if not self.healthy:
            self.healthy = True
            log.warning("store.recovered", extra={"pending": len(self._pending)})
            if self._on_health is not None:
                self._on_health(True)
