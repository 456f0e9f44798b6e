"""Operator data primitives on every backend: blobs, tables, logs kept by count and age, claims."""

from __future__ import annotations

import asyncio

import pytest

from server.state.redis_store import RedisStore
from server.state.shared_data import GuardedData, MemoryData, RedisData, SharedData, SqliteData
from server.state.sqlite_store import SqliteStore
from server.state.store import DeviceStore
from tests.test_store import store

__all__ = ["store"]  # the fixture, shared with the device store's tests


@pytest.fixture
async def data(store: DeviceStore) -> SharedData:
    """The operator data of each backend, beside its device store (the ``store`` fixture's three)."""
    if isinstance(store, RedisStore):
        return GuardedData(RedisData(store.client))
    if isinstance(store, SqliteStore):
        return GuardedData(await SqliteData.open(store))
    return MemoryData()


async def test_blobs_round_trip_bytes(data: SharedData) -> None:
    blob = bytes(range(256)) * 100
    await data.put_blob("sound:abc", blob)
    assert await data.get_blob("sound:abc") == blob
    assert await data.get_blob("sound:missing") is None


async def test_tables_set_replace_and_delete(data: SharedData) -> None:
    await data.set_entry("sounds:acme", "1", '{"a": 1}')
    await data.set_entry("sounds:acme", "1", '{"a": 2}')
    await data.set_entry("sounds:acme", "2", "{}")
    await data.set_entry("sounds:globex", "1", "{}")
    assert await data.entries("sounds:acme") == {"1": '{"a": 2}', "2": "{}"}
    await data.set_entry("sounds:acme", "2", None)
    assert await data.entries("sounds:acme") == {"1": '{"a": 2}'}
    assert await data.entries("sounds:nobody") == {}


async def test_logs_are_newest_first_paged_and_kept_by_count(data: SharedData) -> None:
    ids = [await data.append("audit:x", f"e{i}", keep=5, max_age_s=3600) for i in range(8)]
    newest = await data.recent("audit:x", 3, None)
    assert [e for _, e in newest] == ["e7", "e6", "e5"]
    rest = await data.recent("audit:x", 10, newest[-1][0])
    assert [e for _, e in rest] == ["e4", "e3"]  # only 5 kept
    assert [i for i, _ in [*newest, *rest]] == list(reversed(ids))[:5]
    assert await data.recent("audit:other", 10, None) == []


async def test_logs_drop_what_is_older_than_the_age(data: SharedData) -> None:
    await data.append("audit:y", "old", keep=100, max_age_s=3600)
    await data.append("audit:y", "new", keep=100, max_age_s=-1)  # everything is "older" now
    assert [e for _, e in await data.recent("audit:y", 10, None)] == []


async def test_an_entry_is_taken_once(data: SharedData) -> None:
    await data.set_entry("logins", "t1", "alice")
    assert await data.get_entry("logins", "t1") == "alice"
    assert await data.take_entry("logins", "t1") == "alice"
    assert await data.take_entry("logins", "t1") is None
    assert await data.get_entry("logins", "t1") is None


async def test_a_claim_has_exactly_one_winner_and_expires(data: SharedData) -> None:
    won = await asyncio.gather(*(data.claim("schedule:acme/x@1.0", f"node-{i}", 60) for i in range(20)))
    assert sum(won) == 1
    assert await data.claim("schedule:acme/x@2.0", "node-0", 0.05)  # another occurrence: its own claim
    assert not await data.claim("schedule:acme/x@2.0", "node-1", 0.05)
    await asyncio.sleep(0.1)  # the claim's expiry is the behaviour under test
    assert await data.claim("schedule:acme/x@2.0", "node-1", 60)  # expired: takeable again
    assert not await data.claim("schedule:acme/x@1.0", "node-2", 60)  # the first is still held


async def test_a_claim_is_released_only_by_its_holder(data: SharedData) -> None:
    assert await data.claim("schedule:acme/x@3.0", "node-0", 60)
    await data.release("schedule:acme/x@3.0", "node-1")  # not its holder: still held
    assert not await data.claim("schedule:acme/x@3.0", "node-1", 60)
    await data.release("schedule:acme/x@3.0", "node-0")
    assert await data.claim("schedule:acme/x@3.0", "node-1", 60)  # given back: takeable again
    await data.release("schedule:acme/x@9.0", "node-0")  # nothing held: nothing happens


async def test_a_dropped_log_is_empty_and_others_stay(data: SharedData) -> None:
    await data.append("schedule-runs:acme/a", "r1", keep=5, max_age_s=3600)
    await data.append("schedule-runs:acme/b", "r2", keep=5, max_age_s=3600)
    await data.drop_log("schedule-runs:acme/a")
    assert await data.recent("schedule-runs:acme/a", 10, None) == []
    assert [e for _, e in await data.recent("schedule-runs:acme/b", 10, None)] == ["r2"]
    await data.drop_log("schedule-runs:nobody")  # nothing there: nothing happens


async def test_a_claim_is_extended_only_by_its_holder_while_held(data: SharedData) -> None:
    assert await data.claim("schedule:acme/x@4.0", "node-0", 0.05)
    assert not await data.extend("schedule:acme/x@4.0", "node-1", 60)  # not its holder
    assert await data.extend("schedule:acme/x@4.0", "node-0", 60)
    await asyncio.sleep(0.1)  # past the first expiry (the behaviour under test): extended, still held
    assert not await data.claim("schedule:acme/x@4.0", "node-1", 60)
    assert await data.claim("schedule:acme/x@5.0", "node-0", 0.05)
    await asyncio.sleep(0.1)
    assert not await data.extend("schedule:acme/x@5.0", "node-0", 60)  # expired: the lease is lost
    assert not await data.extend("schedule:acme/x@6.0", "node-0", 60)  # never held
