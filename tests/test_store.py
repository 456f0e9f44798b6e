from __future__ import annotations

from pathlib import Path

from auth.identity import Identity
from server.store import DeviceRecord, MemoryStore, SqliteStore


async def test_sqlite_store_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "devices.sqlite3"
    store = await SqliteStore.open(path)
    a = DeviceRecord(Identity("acme", "dev-1"), mode=3, battery_level=0.5, buttons=(1, 0, 1, 1))
    b = DeviceRecord(Identity("globex", "dev-1"), mode=1)
    await store.save(a)
    await store.save(b)
    await store.save(a.with_changes(mode=4))
    await store.close()

    reopened = await SqliteStore.open(path)
    loaded = await reopened.load(Identity("acme", "dev-1"))
    assert loaded is not None and loaded.mode == 4 and loaded.buttons == (1, 0, 1, 1)
    assert loaded.battery_level == 0.5
    other = await reopened.load(Identity("globex", "dev-1"))
    assert other is not None and other.mode == 1
    assert await reopened.load(Identity("acme", "dev-9")) is None
    await reopened.close()
    await reopened.close()  # idempotent


async def test_memory_store() -> None:
    store = MemoryStore()
    record = DeviceRecord(Identity("acme", "dev-1"), mode=2)
    await store.save(record)
    assert await store.load(Identity("acme", "dev-1")) == record
    assert await store.load(Identity("globex", "dev-1")) is None
