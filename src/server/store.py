"""Device state that outlives a connection, changed by intent, never by whole-record saves.

Two writers (two replicas, or a replica and an operator) must never undo each
other, so the store offers operations that say what they mean:

* ``claim_session``: the device's session is now this one; the epoch goes up by
  one, atomically. Returns the new epoch.
* ``set_mode`` / ``record_telemetry``: applied only if the session they were
  made in is still the device's session (compare-and-set), so a replica that
  lost the device can never overwrite what its new replica wrote. ``None`` as
  the session applies unconditionally (an operator setting an offline device).
* ``load``: the shared truth.

Backends: ``MemoryStore`` (tests), ``SqliteStore`` (the embedded default, one
process; all calls on one thread so the loop never blocks; the file is checked
at open, so a corrupt or unwritable file stops start-up with one clear line)
and ``RedisStore`` (redis_store.py; several processes and replicas).
A store raises on failure; ``StoreGuard`` decides what that means for live devices.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

from auth.identity import Identity

T = TypeVar("T")
P = ParamSpec("P")
Buttons = tuple[int, int, int, int]  # DeviceStatus.ButtonStatus per button


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """What the service remembers about a device between connections."""

    identity: Identity
    mode: int = 0
    battery_level: float | None = None
    buttons: Buttons | None = None
    session_id: str | None = None  # the device's current session; older session tokens are refused
    epoch: int = 0  # goes up with every claimed session: orders sessions across replicas
    last_seen: float | None = None  # wall clock of the last telemetry (status answer, disconnect)
    updated_at: float = field(default_factory=time.time)

    def with_changes(self, **changes: object) -> DeviceRecord:
        return replace(self, updated_at=time.time(), **changes)  # type: ignore[arg-type]

    def fields(self) -> dict[str, Any]:
        """The stored fields (JSON-able), identity apart."""
        return {
            "mode": self.mode,
            "battery_level": self.battery_level,
            "buttons": list(self.buttons) if self.buttons is not None else None,
            "session_id": self.session_id,
            "epoch": self.epoch,
            "last_seen": self.last_seen,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_fields(cls, identity: Identity, data: dict[str, Any]) -> DeviceRecord:
        buttons = data.get("buttons")
        battery = data.get("battery_level")
        last_seen = data.get("last_seen")
        return cls(
            identity=identity,
            mode=int(data.get("mode") or 0),
            battery_level=float(battery) if battery is not None else None,
            buttons=(int(buttons[0]), int(buttons[1]), int(buttons[2]), int(buttons[3])) if buttons else None,
            session_id=data.get("session_id") or None,
            epoch=int(data.get("epoch") or 0),
            last_seen=float(last_seen) if last_seen is not None else None,
            updated_at=float(data.get("updated_at") or 0.0),
        )


@dataclass(frozen=True, slots=True)
class Telemetry:
    battery_level: float | None
    buttons: Buttons | None
    last_seen: float


class DeviceStore(Protocol):
    async def load(self, identity: Identity) -> DeviceRecord | None: ...
    async def claim_session(self, identity: Identity, session_id: str) -> int: ...
    async def set_mode(self, identity: Identity, mode: int, session_id: str | None) -> bool: ...
    async def record_telemetry(
        self, identity: Identity, telemetry: Telemetry, session_id: str | None
    ) -> bool: ...
    async def probe(self) -> None:
        """A cheap write that fails exactly when other writes would (disk full, locked, down)."""

    async def close(self) -> None: ...


def _applies(record: DeviceRecord | None, session_id: str | None) -> bool:
    """A change made in ``session_id`` may land: unconditional, or that session is still current."""
    return session_id is None or (record is not None and record.session_id == session_id)


def _claimed(record: DeviceRecord | None, identity: Identity, session_id: str) -> DeviceRecord:
    base = record or DeviceRecord(identity)
    return base.with_changes(session_id=session_id, epoch=base.epoch + 1)


def _with_telemetry(record: DeviceRecord | None, identity: Identity, telemetry: Telemetry) -> DeviceRecord:
    return (record or DeviceRecord(identity)).with_changes(
        battery_level=telemetry.battery_level, buttons=telemetry.buttons, last_seen=telemetry.last_seen
    )


class MemoryStore:
    """Records in a dict; each intent is atomic because nothing awaits inside it."""

    def __init__(self) -> None:
        self._records: dict[Identity, DeviceRecord] = {}

    async def load(self, identity: Identity) -> DeviceRecord | None:
        return self._records.get(identity)

    async def claim_session(self, identity: Identity, session_id: str) -> int:
        record = _claimed(self._records.get(identity), identity, session_id)
        self._records[identity] = record
        return record.epoch

    async def set_mode(self, identity: Identity, mode: int, session_id: str | None) -> bool:
        record = self._records.get(identity)
        if not _applies(record, session_id):
            return False
        self._records[identity] = (record or DeviceRecord(identity)).with_changes(mode=mode)
        return True

    async def record_telemetry(
        self, identity: Identity, telemetry: Telemetry, session_id: str | None
    ) -> bool:
        record = self._records.get(identity)
        if not _applies(record, session_id):
            return False
        self._records[identity] = _with_telemetry(record, identity, telemetry)
        return True

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
    """The state store cannot be used at start-up; the message says which and what to do."""


def _unusable(path: Path, exc: BaseException) -> StateFileError:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        hint = "it is not a usable SQLite database: move it aside to start empty, or restore a backup"
    elif "readonly" in text or "unable to open" in text or isinstance(exc, PermissionError):
        hint = f"it cannot be opened for writing: check that {path.parent} and the file are writable"
    else:
        hint = "check the disk and the file, or set --state-path elsewhere"
    return StateFileError(f"state file {path}: {text}; {hint}")


class SqliteStore:
    """One connection, owned by one worker thread; every intent is one transaction on it."""

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
            self._probe_with(conn)  # writable now, not at the first device
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
    def _probe_with(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)", (time.time(),))

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError("state store is closed")
        return self._conn

    def _read(self, identity: Identity) -> DeviceRecord | None:
        row = self._db.execute(
            "SELECT state FROM devices WHERE tenant = ? AND device_id = ?",
            (identity.tenant, identity.device_id),
        ).fetchone()
        return DeviceRecord.from_fields(identity, json.loads(row[0])) if row else None

    def _write(self, record: DeviceRecord) -> None:
        self._db.execute(
            "INSERT INTO devices (tenant, device_id, state, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (tenant, device_id) DO UPDATE SET state = excluded.state, "
            "updated_at = excluded.updated_at",
            (
                record.identity.tenant,
                record.identity.device_id,
                json.dumps(record.fields()),
                record.updated_at,
            ),
        )

    def _transaction(
        self, identity: Identity, change: Callable[[DeviceRecord | None], DeviceRecord | None]
    ) -> bool:
        """Read, change and write one record atomically (BEGIN IMMEDIATE); False if nothing changed."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            new = change(self._read(identity))
            if new is not None:
                self._write(new)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return new is not None

    def _claim(self, identity: Identity, session_id: str) -> int:
        claimed: list[DeviceRecord] = []

        def change(record: DeviceRecord | None) -> DeviceRecord:
            claimed.append(_claimed(record, identity, session_id))
            return claimed[0]

        self._transaction(identity, change)
        return claimed[0].epoch

    async def load(self, identity: Identity) -> DeviceRecord | None:
        return await self._call(self._read, identity)

    async def claim_session(self, identity: Identity, session_id: str) -> int:
        return await self._call(self._claim, identity, session_id)

    async def set_mode(self, identity: Identity, mode: int, session_id: str | None) -> bool:
        def change(record: DeviceRecord | None) -> DeviceRecord | None:
            if not _applies(record, session_id):
                return None
            return (record or DeviceRecord(identity)).with_changes(mode=mode)

        return await self._call(self._transaction, identity, change)

    async def record_telemetry(
        self, identity: Identity, telemetry: Telemetry, session_id: str | None
    ) -> bool:
        def change(record: DeviceRecord | None) -> DeviceRecord | None:
            return _with_telemetry(record, identity, telemetry) if _applies(record, session_id) else None

        return await self._call(self._transaction, identity, change)

    async def probe(self) -> None:
        await self._call(self._probe_with, self._db)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        if self._conn is not None:
            await self._call(self._close)
        self._executor.shutdown(wait=True)
