"""Device records in one SQLite file: the embedded default for a single server process.

One connection, owned by one worker thread, so the event loop never blocks on the disk; every
intent is one write transaction on it. The file is checked when it is opened (integrity, schema,
rows), so a corrupt or unwritable file stops start-up with one clear line (``StateFileError``).
The shared operator data (shared_data.py) uses the same connection and ``write_transaction``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from auth.identity import Identity
from server.state.store import DeviceRecord, Intents, StateFileError, applies, checked_changes, claimed_record

T = TypeVar("T")
P = ParamSpec("P")

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


def _unusable(path: Path, exc: BaseException) -> StateFileError:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        hint = "it is not a usable SQLite database: move it aside to start empty, or restore a backup"
    elif "readonly" in text or "unable to open" in text or isinstance(exc, PermissionError):
        hint = f"it cannot be opened for writing: check that {path.parent} and the file are writable"
    else:
        hint = "check the disk and the file, or set --state-path elsewhere"
    return StateFileError(f"state file {path}: {text}; {hint}")


@contextlib.contextmanager
def write_transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction on the store's connection (device records and shared data alike):
    BEGIN IMMEDIATE takes the write lock up front, so two writers never deadlock upgrading a read;
    committed when the block ends, rolled back if it (or the commit) fails."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class SqliteStore(Intents):
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
            await store.run(store._open)
        except (sqlite3.Error, OSError) as exc:
            await store.close()
            raise _unusable(path, exc) from None
        return store

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
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

    @property
    def connection(self) -> sqlite3.Connection:
        """The one connection, for code that runs on the store's thread (``run``)."""
        return self._db

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
        with write_transaction(self._db):
            new = change(self._read(identity))
            if new is not None:
                self._write(new)
        return new is not None

    def _claim(self, identity: Identity, session_id: str, facts: dict[str, object] | None) -> int:
        claimed: list[DeviceRecord] = []

        def change(record: DeviceRecord | None) -> DeviceRecord | None:
            new = claimed_record(record, identity, session_id, facts)
            claimed.extend([new] if new is not None else [])
            return new

        self._transaction(identity, change)
        return claimed[0].epoch if claimed else 0

    def _list(self, tenant: str | None) -> list[DeviceRecord]:
        rows = self._db.execute(
            "SELECT tenant, device_id, state FROM devices WHERE (? IS NULL OR tenant = ?) "
            "ORDER BY tenant, device_id",
            (tenant, tenant),
        ).fetchall()
        records = [DeviceRecord.from_fields(Identity(t, d), json.loads(state)) for t, d, state in rows]
        return [r for r in records if r.epoch > 0]

    async def load(self, identity: Identity) -> DeviceRecord | None:
        return await self.run(self._read, identity)

    async def list_devices(self, tenant: str | None) -> list[DeviceRecord]:
        return await self.run(self._list, tenant)

    async def claim_session(
        self, identity: Identity, session_id: str, facts: dict[str, object] | None = None
    ) -> int:
        return await self.run(self._claim, identity, session_id, facts)

    async def update(self, identity: Identity, changes: dict[str, object], session_id: str | None) -> bool:
        def change(record: DeviceRecord | None) -> DeviceRecord | None:
            if not applies(record, session_id):
                return None
            return (record or DeviceRecord(identity)).with_changes(**checked_changes(changes))

        return await self.run(self._transaction, identity, change)

    async def probe(self) -> None:
        await self.run(self._probe_with, self._db)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        if self._conn is not None:
            await self.run(self._close)
        self._executor.shutdown(wait=True)
