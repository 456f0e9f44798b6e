"""Which backend holds the state, decided once at start-up.

The device store, the operator data beside it, and whether other processes
share them (then the fleet talks over the backend's Redis client too) all
follow from one setting. Deciding here keeps ``isinstance`` checks on store
types out of the composition root and the data layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import redis.asyncio as aioredis

from server.state.memory_store import MemoryStore
from server.state.redis_store import RedisStore
from server.state.shared_data import GuardedData, MemoryData, RedisData, SharedData, SqliteData
from server.state.sqlite_store import SqliteStore
from server.state.store import DeviceStore


class BackendSettings(Protocol):
    """The settings the choice needs (``ServerSettings`` has them; the state layer does not import it)."""

    @property
    def state_backend(self) -> str: ...
    @property
    def state_path(self) -> Path: ...
    @property
    def redis_url(self) -> str: ...
    @property
    def redis_ca_file(self) -> Path | None: ...
    @property
    def redis_password_file(self) -> Path | None: ...


@dataclass(frozen=True)
class Backend:
    """An opened backend: close ``store`` when done (the data shares its connection)."""

    store: DeviceStore
    data: SharedData
    redis: aioredis.Redis | None = None  # set when the state is shared by several processes

    @property
    def shared(self) -> bool:
        """Other processes write it too: never trust a cached session; talk to them over ``redis``."""
        return self.redis is not None


async def open_backend(settings: BackendSettings) -> Backend:
    """Open the configured backend. Redis is not contacted yet: a server started before its Redis
    waits for it, unready (see the store probe)."""
    if settings.state_backend == "redis":
        redis_store = RedisStore.connect(
            settings.redis_url, settings.redis_ca_file, settings.redis_password_file
        )
        return Backend(redis_store, GuardedData(RedisData(redis_store.client)), redis_store.client)
    if settings.state_backend == "memory":
        return Backend(MemoryStore(), MemoryData())
    sqlite_store = await SqliteStore.open(settings.state_path)
    try:
        data = GuardedData(await SqliteData.open(sqlite_store))
    except BaseException:
        await sqlite_store.close()
        raise
    return Backend(sqlite_store, data)
