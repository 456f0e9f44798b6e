"""Operator data in the state store: blobs, small tables and append-only logs.

The operator API keeps three kinds of data next to the device records, in
the same backend (so one process needs nothing but its SQLite file, and
replicas share it through Redis):

* blobs, content-addressed (encoded sounds): ``put_blob`` / ``get_blob``;
* small tables of JSON entries (each tenant's sounds per mode): ``set_entry`` / ``entries``;
* append-only logs kept for a count and an age (the audit log): ``append`` /
  ``recent``, newest first, paged by entry id;
* claims (``claim``): a key taken once, atomically, for a time; of any number of
  processes asking for the same key while it is held, exactly one gets it (the
  schedules' exactly-once occurrences).

The audit log and the tenant sounds are written once on top of these; each
backend implements only the primitives.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import logging
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from comms.log_sampling import SampledLog
from server.errors import StoreUnavailable, describe
from server.state.redis_store import KEY_PREFIX
from server.state.sqlite_store import SqliteStore, write_transaction

log = logging.getLogger(__name__)
_failures = SampledLog()  # an outage fails every use: a few lines, not thousands


class SharedData(Protocol):
    async def put_blob(self, key: str, data: bytes) -> None: ...
    async def get_blob(self, key: str) -> bytes | None: ...
    async def set_entry(self, table: str, key: str, value: str | None) -> None:
        """Set (or, with None, delete) one entry of a table."""

    async def entries(self, table: str) -> dict[str, str]: ...
    async def get_entry(self, table: str, key: str) -> str | None: ...
    async def take_entry(self, table: str, key: str) -> str | None:
        """Remove one entry and return it, atomically: of two callers only one gets it."""

    async def append(self, log: str, entry: str, keep: int, max_age_s: float) -> str:
        """Append; drop what is beyond ``keep`` entries or older than ``max_age_s``; the new id."""

    async def recent(self, log: str, limit: int, before: str | None) -> list[tuple[str, str]]:
        """Up to ``limit`` (id, entry), newest first, older than the id ``before`` if given."""

    async def drop_log(self, log: str) -> None:
        """Every entry of ``log`` gone (what it logged was deleted)."""

    async def claim(self, key: str, holder: str, ttl_s: float) -> bool:
        """Take ``key`` for ``ttl_s`` if nobody holds it, atomically: True for the one caller that did."""

    async def extend(self, key: str, holder: str, ttl_s: float) -> bool:
        """Hold ``key`` ``ttl_s`` from now if ``holder`` still has it (unexpired), atomically: False
        when it expired or another took it since (a lease lost)."""

    async def release(self, key: str, holder: str) -> None:
        """Give ``key`` back if ``holder`` still holds it (a claim whose work did not start), atomically."""


class MemoryData:
    """For tests and the memory backend: nothing survives the process."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._tables: dict[str, dict[str, str]] = {}
        self._logs: dict[str, deque[tuple[int, float, str]]] = {}
        self._ids = itertools.count(1)
        self._claims: dict[str, tuple[str, float]] = {}  # key: (holder, until unix time)

    async def put_blob(self, key: str, data: bytes) -> None:
        self._blobs[key] = data

    async def get_blob(self, key: str) -> bytes | None:
        return self._blobs.get(key)

    async def set_entry(self, table: str, key: str, value: str | None) -> None:
        rows = self._tables.setdefault(table, {})
        if value is None:
            rows.pop(key, None)
        else:
            rows[key] = value

    async def entries(self, table: str) -> dict[str, str]:
        return dict(self._tables.get(table, {}))

    async def get_entry(self, table: str, key: str) -> str | None:
        return self._tables.get(table, {}).get(key)

    async def take_entry(self, table: str, key: str) -> str | None:
        return self._tables.get(table, {}).pop(key, None)

    async def append(self, log: str, entry: str, keep: int, max_age_s: float) -> str:
        now = time.time()
        rows = self._logs.setdefault(log, deque())
        entry_id = next(self._ids)
        rows.append((entry_id, now, entry))
        while rows and (len(rows) > keep or rows[0][1] < now - max_age_s):
            rows.popleft()
        return str(entry_id)

    async def recent(self, log: str, limit: int, before: str | None) -> list[tuple[str, str]]:
        bound = int(before) if before else None
        rows = [r for r in reversed(self._logs.get(log, ())) if bound is None or r[0] < bound]
        return [(str(entry_id), entry) for entry_id, _, entry in rows[:limit]]

    async def drop_log(self, log: str) -> None:
        self._logs.pop(log, None)

    async def claim(self, key: str, holder: str, ttl_s: float) -> bool:
        now = time.time()
        for old in [k for k, (_, until) in self._claims.items() if until <= now]:
            del self._claims[old]
        if key in self._claims:
            return False
        self._claims[key] = (holder, now + ttl_s)
        return True

    async def extend(self, key: str, holder: str, ttl_s: float) -> bool:
        now = time.time()
        held, until = self._claims.get(key, ("", 0.0))
        if held != holder or until <= now:
            return False
        self._claims[key] = (holder, now + ttl_s)
        return True

    async def release(self, key: str, holder: str) -> None:
        if self._claims.get(key, ("", 0.0))[0] == holder:
            del self._claims[key]


_SQLITE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, data BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS entries (tbl TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, "
    "PRIMARY KEY (tbl, key))",
    "CREATE TABLE IF NOT EXISTS logs (id INTEGER PRIMARY KEY AUTOINCREMENT, log TEXT NOT NULL, "
    "at REAL NOT NULL, entry TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS logs_by_log ON logs (log, id)",
    "CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, holder TEXT NOT NULL, until REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS claims_by_until ON claims (until)",  # each claim drops the expired
)


class SqliteData:
    """Tables in the state file, on the store's one thread (so never concurrently with it)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    @classmethod
    async def open(cls, store: SqliteStore) -> SqliteData:
        data = cls(store)
        await store.run(data._create)
        return data

    def _create(self) -> None:
        for statement in _SQLITE_SCHEMA:
            self._db.execute(statement)

    @property
    def _db(self) -> sqlite3.Connection:
        return self._store.connection

    async def put_blob(self, key: str, data: bytes) -> None:
        await self._store.run(
            lambda: self._db.execute("INSERT OR REPLACE INTO blobs (key, data) VALUES (?, ?)", (key, data))
        )

    async def get_blob(self, key: str) -> bytes | None:
        row = await self._store.run(
            lambda: self._db.execute("SELECT data FROM blobs WHERE key = ?", (key,)).fetchone()
        )
        return bytes(row[0]) if row else None

    async def set_entry(self, table: str, key: str, value: str | None) -> None:
        def write() -> None:
            if value is None:
                self._db.execute("DELETE FROM entries WHERE tbl = ? AND key = ?", (table, key))
            else:
                self._db.execute(
                    "INSERT OR REPLACE INTO entries (tbl, key, value) VALUES (?, ?, ?)", (table, key, value)
                )

        await self._store.run(write)

    async def entries(self, table: str) -> dict[str, str]:
        rows = await self._store.run(
            lambda: self._db.execute("SELECT key, value FROM entries WHERE tbl = ?", (table,)).fetchall()
        )
        return {str(k): str(v) for k, v in rows}

    async def get_entry(self, table: str, key: str) -> str | None:
        row = await self._store.run(
            lambda: self._db.execute(
                "SELECT value FROM entries WHERE tbl = ? AND key = ?", (table, key)
            ).fetchone()
        )
        return str(row[0]) if row else None

    async def take_entry(self, table: str, key: str) -> str | None:
        row = await self._store.run(
            lambda: self._db.execute(
                "DELETE FROM entries WHERE tbl = ? AND key = ? RETURNING value", (table, key)
            ).fetchone()
        )
        return str(row[0]) if row else None

    def _append(self, log: str, entry: str, keep: int, max_age_s: float) -> str:
        now = time.time()
        db = self._db
        with write_transaction(db):
            cursor = db.execute("INSERT INTO logs (log, at, entry) VALUES (?, ?, ?)", (log, now, entry))
            db.execute(
                "DELETE FROM logs WHERE log = ? AND (at < ? OR id <= COALESCE((SELECT id FROM logs "
                "WHERE log = ? ORDER BY id DESC LIMIT 1 OFFSET ?), 0))",
                (log, now - max_age_s, log, keep),
            )
        return str(cursor.lastrowid)

    async def append(self, log: str, entry: str, keep: int, max_age_s: float) -> str:
        return await self._store.run(self._append, log, entry, keep, max_age_s)

    async def recent(self, log: str, limit: int, before: str | None) -> list[tuple[str, str]]:
        bound = int(before) if before and before.isdigit() else None
        rows = await self._store.run(
            lambda: self._db.execute(
                "SELECT id, entry FROM logs WHERE log = ? AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?",
                (log, bound, bound, limit),
            ).fetchall()
        )
        return [(str(i), str(e)) for i, e in rows]

    def _drop_log(self, log: str) -> None:
        db = self._db
        with write_transaction(db):
            db.execute("DELETE FROM logs WHERE log = ?", (log,))

    async def drop_log(self, log: str) -> None:
        await self._store.run(self._drop_log, log)

    def _claim(self, key: str, holder: str, ttl_s: float) -> bool:
        now = time.time()
        db = self._db
        with write_transaction(db):  # one writer at a time, across the processes sharing the file
            db.execute("DELETE FROM claims WHERE until <= ?", (now,))
            cursor = db.execute(
                "INSERT OR IGNORE INTO claims (key, holder, until) VALUES (?, ?, ?)",
                (key, holder, now + ttl_s),
            )
        return cursor.rowcount == 1

    async def claim(self, key: str, holder: str, ttl_s: float) -> bool:
        return await self._store.run(self._claim, key, holder, ttl_s)

    def _extend(self, key: str, holder: str, ttl_s: float) -> bool:
        now = time.time()
        db = self._db
        with write_transaction(db):
            cursor = db.execute(
                "UPDATE claims SET until = ? WHERE key = ? AND holder = ? AND until > ?",
                (now + ttl_s, key, holder, now),
            )
        return cursor.rowcount == 1

    async def extend(self, key: str, holder: str, ttl_s: float) -> bool:
        return await self._store.run(self._extend, key, holder, ttl_s)

    def _release(self, key: str, holder: str) -> None:
        db = self._db
        with write_transaction(db):
            db.execute("DELETE FROM claims WHERE key = ? AND holder = ?", (key, holder))

    async def release(self, key: str, holder: str) -> None:
        await self._store.run(self._release, key, holder)


# KEYS[1] = table hash, ARGV[1] = key: the value, deleted in the same step (nil when absent).
_TAKE = """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if value then redis.call('HDEL', KEYS[1], ARGV[1]) end
return value
"""

# KEYS[1] = claim key, ARGV[1] = holder, ARGV[2] = ms: held that long from now while that holder has it.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS[1] = claim key, ARGV[1] = holder: deleted only while that holder has it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisData:
    """Keys beside the device records: ``blob:<key>`` (base64: the client decodes replies as
    text), ``table:<name>`` hashes, ``log:<name>`` streams trimmed by count and age (stream ids
    are times), ``claim:<key>`` strings set with NX and an expiry."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._take = client.register_script(_TAKE)
        self._release = client.register_script(_RELEASE)
        self._extend = client.register_script(_EXTEND)

    async def put_blob(self, key: str, data: bytes) -> None:
        await self._redis.set(f"{KEY_PREFIX}blob:{key}", base64.b64encode(data).decode())

    async def get_blob(self, key: str) -> bytes | None:
        value = await self._redis.get(f"{KEY_PREFIX}blob:{key}")
        return base64.b64decode(value) if value is not None else None

    async def set_entry(self, table: str, key: str, value: str | None) -> None:
        name = f"{KEY_PREFIX}table:{table}"
        if value is None:
            await self._redis.hdel(name, key)
        else:
            await self._redis.hset(name, key, value)

    async def entries(self, table: str) -> dict[str, str]:
        rows = await self._redis.hgetall(f"{KEY_PREFIX}table:{table}")
        return {str(k): str(v) for k, v in rows.items()}

    async def get_entry(self, table: str, key: str) -> str | None:
        value = await self._redis.hget(f"{KEY_PREFIX}table:{table}", key)
        return str(value) if value is not None else None

    async def take_entry(self, table: str, key: str) -> str | None:
        value = await self._take(keys=[f"{KEY_PREFIX}table:{table}"], args=[key])
        return str(value) if value is not None else None

    async def append(self, log: str, entry: str, keep: int, max_age_s: float) -> str:
        name = f"{KEY_PREFIX}log:{log}"
        oldest_ms = int((time.time() - max_age_s) * 1000)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(name, {"e": entry}, maxlen=keep, approximate=False)
            pipe.xtrim(name, minid=f"{oldest_ms}-0", approximate=False)
            entry_id, _ = await pipe.execute()
        return str(entry_id)

    async def recent(self, log: str, limit: int, before: str | None) -> list[tuple[str, str]]:
        top = f"({before}" if before else "+"
        rows = await self._redis.xrevrange(f"{KEY_PREFIX}log:{log}", max=top, min="-", count=limit)
        return [(str(entry_id), str((fields or {}).get("e", ""))) for entry_id, fields in rows or []]

    async def drop_log(self, log: str) -> None:
        await self._redis.delete(f"{KEY_PREFIX}log:{log}")

    async def claim(self, key: str, holder: str, ttl_s: float) -> bool:
        taken = await self._redis.set(
            f"{KEY_PREFIX}claim:{key}", holder, nx=True, px=max(1, int(ttl_s * 1000))
        )
        return bool(taken)

    async def extend(self, key: str, holder: str, ttl_s: float) -> bool:
        ms = max(1, int(ttl_s * 1000))
        return bool(await self._extend(keys=[f"{KEY_PREFIX}claim:{key}"], args=[holder, ms]))

    async def release(self, key: str, holder: str) -> None:
        await self._release(keys=[f"{KEY_PREFIX}claim:{key}"], args=[holder])


class GuardedData:
    """A backend whose failures are ``StoreUnavailable``, whoever uses it (audit, sounds, console
    sessions, device history): one mapping for every path, and the backend's own text (addresses
    included) stays in the log, never in an answer."""

    def __init__(self, backend: SharedData) -> None:
        self._backend = backend

    @contextlib.asynccontextmanager
    async def _mapped(self, op: str) -> AsyncIterator[None]:
        try:
            yield
        except StoreUnavailable:
            raise
        except (RedisError, OSError, sqlite3.Error) as exc:
            held_back = _failures.admit(op)
            if held_back is not None:
                log.warning(
                    "shared_data.unavailable",
                    extra={"op": op, "error": describe(exc), "suppressed": held_back},
                )
            raise StoreUnavailable("state store unavailable") from None

    async def put_blob(self, key: str, data: bytes) -> None:
        async with self._mapped("put_blob"):
            await self._backend.put_blob(key, data)

    async def get_blob(self, key: str) -> bytes | None:
        async with self._mapped("get_blob"):
            return await self._backend.get_blob(key)

    async def set_entry(self, table: str, key: str, value: str | None) -> None:
        async with self._mapped("set_entry"):
            await self._backend.set_entry(table, key, value)

    async def entries(self, table: str) -> dict[str, str]:
        async with self._mapped("entries"):
            return await self._backend.entries(table)

    async def get_entry(self, table: str, key: str) -> str | None:
        async with self._mapped("get_entry"):
            return await self._backend.get_entry(table, key)

    async def take_entry(self, table: str, key: str) -> str | None:
        async with self._mapped("take_entry"):
            return await self._backend.take_entry(table, key)

    async def append(self, log: str, entry: str, keep: int, max_age_s: float) -> str:
        async with self._mapped("append"):
            return await self._backend.append(log, entry, keep, max_age_s)

    async def recent(self, log: str, limit: int, before: str | None) -> list[tuple[str, str]]:
        async with self._mapped("recent"):
            return await self._backend.recent(log, limit, before)

    async def drop_log(self, log: str) -> None:
        async with self._mapped("drop_log"):
            await self._backend.drop_log(log)

    async def claim(self, key: str, holder: str, ttl_s: float) -> bool:
        async with self._mapped("claim"):
            return await self._backend.claim(key, holder, ttl_s)

    async def extend(self, key: str, holder: str, ttl_s: float) -> bool:
        async with self._mapped("extend"):
            return await self._backend.extend(key, holder, ttl_s)

    async def release(self, key: str, holder: str) -> None:
        async with self._mapped("release"):
            await self._backend.release(key, holder)
