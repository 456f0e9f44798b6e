"""The audit log's backlog: what the store could not take is written once it is back, in order,
each entry once (issue 24)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from server.operator import audit as audit_module
from server.operator.audit import AuditEvent, AuditLog
from server.state.shared_data import MemoryData
from tests.helpers import wait_for


class FlakyData(MemoryData):
    """Memory data whose appends fail while ``down``."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def append(self, log: str, entry: str, keep: int, max_age_s: float) -> str:
        if self.down:
            raise ConnectionError("store away")
        return await super().append(log, entry, keep, max_age_s)


def event(n: int) -> AuditEvent:
    return AuditEvent("op", "admin", "acme", "Play", f"dev-{n}", {}, "UNAVAILABLE", request_id=str(n))


async def test_events_the_store_refused_are_stored_in_order_once_it_is_back() -> None:
    data = FlakyData()
    audit = AuditLog(data, keep=100, max_age_s=3600, retry_s=0.01)
    data.down = True
    await asyncio.gather(*(audit.record(event(n)) for n in range(3)))
    assert audit.pending == 6  # each in its tenant's log and the platform's
    data.down = False
    loop = asyncio.create_task(audit.keep_storing())
    try:
        await asyncio.gather(audit.record(event(3)), wait_for(lambda: audit.pending == 0))
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    for tenant in ("acme", None):
        events, _ = await audit.list(tenant, 10)
        assert [e.target for e in events] == ["dev-3", "dev-2", "dev-1", "dev-0"]  # newest first, each once


async def test_the_backlog_is_bounded_and_drops_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_module, "BACKLOG_LIMIT", 4)
    data = FlakyData()
    audit = AuditLog(data, keep=100, max_age_s=3600)
    data.down = True
    for n in range(3):
        await audit.record(event(n))
    assert audit.pending == 4
    data.down = False
    events, _ = await audit.list("acme", 10)  # a listing writes what waited first
    assert [e.target for e in events] == ["dev-2", "dev-1"]
