"""Store intents, the same contract for every backend: claim with an epoch, compare-and-set changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from auth.identity import Identity
from server.state.memory_store import MemoryStore
from server.state.redis_store import RedisStore, device_key, redacted
from server.state.sqlite_store import SqliteStore
from server.state.store import DeviceStore, StateFileError, Telemetry

A = Identity("acme", "dev-1")
B = Identity("globex", "dev-1")


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DeviceStore]:
    opened: DeviceStore
    if request.param == "memory":
        opened = MemoryStore()
    elif request.param == "sqlite":
        opened = await SqliteStore.open(tmp_path / "s.db")
    else:
        opened = await RedisStore.open(request.getfixturevalue("redis_server").url)
    yield opened
    await opened.close()


async def test_claim_raises_the_epoch_and_names_the_session(store: DeviceStore) -> None:
    assert await store.load(A) is None
    assert await store.claim_session(A, "s1") == 1
    assert await store.claim_session(A, "s2") == 2
    record = await store.load(A)
    assert record is not None and (record.session_id, record.epoch) == ("s2", 2)
    assert await store.load(B) is None  # same device id, other tenant: another record


async def test_a_stale_session_cannot_overwrite_a_newer_one(store: DeviceStore) -> None:
    await store.claim_session(A, "old")
    assert await store.set_mode(A, 3, "old")
    await store.claim_session(A, "new")  # the device moved (another replica claimed it)
    assert not await store.set_mode(A, 1, "old")  # the old replica's late write is refused
    assert not await store.record_telemetry(A, Telemetry(0.1, (1, 1, 1, 1), 5.0), "old")
    assert await store.set_mode(A, 4, "new")
    record = await store.load(A)
    assert record is not None and record.mode == 4 and record.battery_level is None


async def test_unconditional_changes_and_telemetry(store: DeviceStore) -> None:
    assert await store.set_mode(B, 2, None)  # e.g. an operator, for a device never connected
    await store.claim_session(B, "s")
    assert await store.record_telemetry(B, Telemetry(0.5, (1, 0, 1, 1), 123.0), "s")
    record = await store.load(B)
    assert record is not None
    assert (record.mode, record.battery_level, record.buttons, record.last_seen) == (
        2,
        0.5,
        (1, 0, 1, 1),
        123.0,
    )
    assert record.session_id == "s" and record.epoch == 1


async def test_sqlite_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "devices.sqlite3"
    store = await SqliteStore.open(path)
    await store.claim_session(A, "s")
    await store.set_mode(A, 4, "s")
    await store.record_telemetry(A, Telemetry(0.5, (1, 0, 1, 1), 9.0), "s")
    await store.close()
    reopened = await SqliteStore.open(path)
    loaded = await reopened.load(A)
    assert loaded is not None and loaded.mode == 4 and loaded.buttons == (1, 0, 1, 1) and loaded.epoch == 1
    await reopened.close()
    await reopened.close()  # idempotent


def test_redis_keys_are_unambiguous() -> None:
    """Ids are [a-z0-9_-]: ':' never appears inside one, so no two identities share a key."""
    assert device_key(Identity("a-b", "c")) != device_key(Identity("a", "b-c"))
    assert device_key(Identity("acme", "dev-1")) == "audio:v1:device:acme:dev-1"


async def test_an_unreachable_redis_is_one_clear_line(tmp_path: Path) -> None:
    from tests.helpers import free_port

    (tmp_path / "pw").write_text("s3cret\n")
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(StateFileError) as info:
        await RedisStore.open(url, password_file=tmp_path / "pw")
    message = str(info.value)
    assert message.startswith(f"cannot reach the Redis state store at {url}") and "\n" not in message
    assert "s3cret" not in message
    assert redacted("redis://user:pw@host:6379/0") == "redis://user:***@host:6379/0"
