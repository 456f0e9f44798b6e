"""After an outage the store guard lands its backlog in batches: a new session's claim goes between them."""

from __future__ import annotations

import asyncio

from auth.identity import Identity
from server.state.guard import FLUSH_BATCH, StoreGuard
from server.state.memory_store import MemoryStore
from tests.helpers import wait_for

BACKLOG = 6 * FLUSH_BATCH


class RecordingStore(MemoryStore):
    """A memory store that can be down, and says in what order writes landed."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.landed: list[str] = []
        self.landing = asyncio.Event()  # the first backlog write after the outage went in

    async def update(self, identity: Identity, changes: dict[str, object], session_id: str | None) -> bool:
        if self.down:
            raise ConnectionError("store down")
        await asyncio.sleep(0)  # a real store's round trip: others may run meanwhile
        self.landed.append(f"update {identity.device_id}")
        self.landing.set()
        return await super().update(identity, changes, session_id)

    async def claim_session(
        self, identity: Identity, session_id: str, facts: dict[str, object] | None = None
    ) -> int:
        self.landed.append(f"claim {identity.device_id}")
        return await super().claim_session(identity, session_id, facts)

    async def probe(self) -> None:
        if self.down:
            raise ConnectionError("store down")


async def test_a_claim_after_an_outage_goes_before_the_rest_of_the_backlog() -> None:
    store = RecordingStore()
    guard = StoreGuard(store, retry_s=0.01)
    guard.start()
    try:
        for i in range(BACKLOG):  # devices that left during the outage: their last state is queued
            guard.mode_later(Identity("acme", f"gone-{i}"), None, 1)
        await wait_for(lambda: not guard.healthy)
        store.down = False  # the store is back: the writer starts on the backlog
        async with asyncio.timeout(10):
            await store.landing.wait()
        newcomer = Identity("acme", "newcomer")
        assert await guard.claim_now(newcomer, "s-1") == 1  # a device of the reconnect storm
        before_claim = store.landed.index("claim newcomer")
        assert before_claim <= FLUSH_BATCH < BACKLOG  # it waited for one batch, not the whole backlog
        await wait_for(lambda: guard.pending == 0, timeout=10)
        assert len(store.landed) == BACKLOG + 1  # and the backlog still landed, every change of it
        last = await store.load(Identity("acme", f"gone-{BACKLOG - 1}"))
        assert last is not None and last.mode == 1
    finally:
        await guard.close()
