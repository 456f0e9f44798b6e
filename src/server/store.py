"""Persistence of device records behind a small async interface.

``SqliteStore`` is the embedded default (a file, nothing to start, survives
restarts); all sqlite calls run on one dedicated thread so the event loop
never blocks. ``MemoryStore`` is for tests and throwaway runs. A Redis store
for several replicas plugs in behind the same methods.

A store raises on failure; ``StoreGuard`` (store_guard.py) decides what a
failure means for live devices. ``SqliteStore.open`` checks the file at once
so a corrupt or unwritable state file stops start-up with one clear line.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import ParamSpec, Protocol, TypeVar

from auth.identity import Identity

T = TypeVar("T")
P = ParamSpec("P")


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """What the service remembers about a device between connections."""

    identity: Identity
    mode: int = 0
    battery_level: float | None = None
    buttons: tuple[int, int, int, int] | None = None  # DeviceStatus.ButtonStatus per button
    session_id: str | None = None  # the device's current session; older session tokens are refused
    updated_at: float = field(default_factory=time.time)

    def with_changes(self, **changes: object) -> DeviceRecord:
        return replace(self, updated_at=time.time(), **changes)  # type: ignore[arg-type]


class DeviceStore(Protocol):
    async def load(self, identity: Identity) -> DeviceRecord | None: ...
    async def save(self, record: DeviceRecord) -> None: ...
    async def probe(self) -> None:
        """A cheap write that fails exactly when saves would (disk full, locked, read-only)."""

    async def close(self) -> None: ...


class MemoryStore:
    def __init__(self) -> None:
        self._records: dict[Identity, DeviceRecord] = {}

    async def load(self, identity: Identity) -> DeviceRecord | None:
        return self._records.get(identity)

    async def save(self, record: DeviceRecord) -> None:
        self._records[record.identity] = record

    async def probe(self) -> None:
        return None

    async def close(self) -> None:
        return None


_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS devices (
    tenant     TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    state      TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (tenant, device_id)
)
""",
    "CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL)",
)
BUSY_TIMEOUT_S = 1.0  # a locked database fails fast: the guard retries, the loop never waits long


class StateFileError(OSError):
    """The state file cannot be used at start-up; the message says which file and what to do."""


def _unusable(path: Path, exc: BaseException) -> StateFileError:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        hint = (
            "it is not a usable SQLite database: move it aside to start with empty state, or restore a backup"
        )
    elif "readonly" in text or "unable to open" in text or isinstance(exc, PermissionError):
        hint = f"it cannot be opened for writing: check that {path.parent} and the file are writable"
    else:
        hint = "check the disk and the file, or set --state-path elsewhere"
    return StateFileError(f"state file {path}: {text}; {hint}")


class SqliteStore:
    """One connection, owned by one worker thread; every call is handed to it."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._conn: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        """Open and check the file; a ``StateFileError`` names it and says what to do."""
        store = cls(path)
        try:
            await store._call(store._open)
        except (sqlite3.Error, OSError) as exc:
            await store.close()
            raise _unusable(path, exc) from None
        return store

    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            (verdict,) = conn.execute("PRAGMA quick_check").fetchone()  # every page readable
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {str(verdict)[:120]}")
            for statement in _SCHEMA:
                conn.execute(statement)
            self._probe(conn)  # writable now, not at the first device
            self._check_rows(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @staticmethod
    def _check_rows(conn: sqlite3.Connection) -> None:
        for (state,) in conn.execute("SELECT state FROM devices"):
            try:
                valid = isinstance(json.loads(state), dict)
            except (TypeError, ValueError):
                valid = False
            if not valid:
                raise sqlite3.DatabaseError("a device row holds no JSON object")

    @staticmethod
    def _probe(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)", (time.time(),))

    def _load(self, identity: Identity) -> DeviceRecord | None:
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT state, updated_at FROM devices WHERE tenant = ? AND device_id = ?",
            (identity.tenant, identity.device_id),
        ).fetchone()
        if row is None:
            return None
        state = json.loads(row[0])
        buttons = state.get("buttons")
        return DeviceRecord(
            identity=identity,
            mode=int(state.get("mode", 0)),
            battery_level=state.get("battery_level"),
            buttons=(buttons[0], buttons[1], buttons[2], buttons[3]) if buttons else None,
            session_id=state.get("session_id"),
            updated_at=row[1],
        )

    def _save(self, record: DeviceRecord) -> None:
        assert self._conn is not None
        state = asdict(record)
        state.pop("identity")
        updated_at = state.pop("updated_at")
        self._conn.execute(
            "INSERT INTO devices (tenant, device_id, state, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (tenant, device_id) DO UPDATE SET state = excluded.state, "
            "updated_at = excluded.updated_at",
            (record.identity.tenant, record.identity.device_id, json.dumps(state), updated_at),
        )

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def load(self, identity: Identity) -> DeviceRecord | None:
        return await self._call(self._load, identity)

    async def save(self, record: DeviceRecord) -> None:
        await self._call(self._save, record)

    async def probe(self) -> None:
        assert self._conn is not None
        await self._call(self._probe, self._conn)

    async def close(self) -> None:
        if self._conn is not None:
            await self._call(self._close)
        self._executor.shutdown(wait=True)
