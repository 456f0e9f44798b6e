"""Device state that outlives a connection, changed by intent, never by whole-record saves.

Two writers (two replicas, or a replica and an operator) must never undo each
other, so the store offers operations that say what they mean:

* ``claim_session``: the device's session is now this one; the epoch goes up by
  one, atomically. Returns the new epoch.
* ``set_mode`` / ``record_telemetry``: applied only if the session they were
  made in is still the device's session (compare-and-set), so a replica that
  lost the device can never overwrite what its new replica wrote. ``None`` as
  the session applies unconditionally (an operator setting an offline device).
* ``update``: any other facts (cert, playing, disconnect reason, revoked),
  compare-and-set on the session like the two above.
* ``record_renewal`` / ``record_renewal_failure``: the device renewed its certificate (new serial,
  notBefore, notAfter, when) or was refused (when, why); unconditional, since a renewal is about
  the device's certificate, not one of its sessions.
* ``load`` / ``list_devices``: the shared truth (one device / a tenant's seen devices).

A revoked device (operator deny-list, ``revoked``) cannot claim a session:
``claim_session`` returns 0 (epochs start at 1).

Backends: ``MemoryStore`` (tests), ``SqliteStore`` (the embedded default, one
process; all calls on one thread so the loop never blocks; the file is checked
at open, so a corrupt or unwritable file stops start-up with one clear line)
and ``RedisStore`` (redis_store.py; several processes and replicas).
A store raises on failure; ``StoreGuard`` decides what that means for live devices.
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
    connected_since: float | None = None  # wall clock the current session was claimed
    disconnect_reason: str | None = None  # status its last session ended with
    cert_serial: int | None = None  # the certificate of the current session
    cert_expires: float | None = None  # its notAfter (wall clock)
    cert_issued: float | None = None  # its notBefore (wall clock): with notAfter, when renewal is due
    playing: tuple[int, float, float] | None = None  # (mode, started at, length s) while a sound plays
    revoked: bool = False  # on the operator deny-list: refused until unrevoked
    revoked_serial: int | None = None  # the certificate it had when revoked (for the record)
    renewed_at: float | None = None  # wall clock of its last certificate renewal
    renewal_failed_at: float | None = None  # wall clock of its last refused renewal
    renewal_failure: str | None = None  # why that one was refused (the refusal's reason)
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
            "connected_since": self.connected_since,
            "disconnect_reason": self.disconnect_reason,
            "cert_serial": self.cert_serial,
            "cert_expires": self.cert_expires,
            "cert_issued": self.cert_issued,
            "playing": list(self.playing) if self.playing is not None else None,
            "revoked": self.revoked,
            "revoked_serial": self.revoked_serial,
            "renewed_at": self.renewed_at,
            "renewal_failed_at": self.renewal_failed_at,
            "renewal_failure": self.renewal_failure,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_fields(cls, identity: Identity, data: dict[str, Any]) -> DeviceRecord:
        buttons = data.get("buttons")
        battery = data.get("battery_level")
        last_seen = data.get("last_seen")
        playing = data.get("playing")
        return cls(
            identity=identity,
            mode=int(data.get("mode") or 0),
            battery_level=float(battery) if battery is not None else None,
            buttons=(int(buttons[0]), int(buttons[1]), int(buttons[2]), int(buttons[3])) if buttons else None,
            session_id=data.get("session_id") or None,
            epoch=int(data.get("epoch") or 0),
            last_seen=float(last_seen) if last_seen is not None else None,
            connected_since=_float_or_none(data.get("connected_since")),
            disconnect_reason=data.get("disconnect_reason") or None,
            cert_serial=_int_or_none(data.get("cert_serial")),
            cert_expires=_float_or_none(data.get("cert_expires")),
            cert_issued=_float_or_none(data.get("cert_issued")),
            playing=(int(playing[0]), float(playing[1]), float(playing[2])) if playing else None,
            revoked=bool(data.get("revoked")),
            revoked_serial=_int_or_none(data.get("revoked_serial")),
            renewed_at=_float_or_none(data.get("renewed_at")),
            renewal_failed_at=_float_or_none(data.get("renewal_failed_at")),
            renewal_failure=data.get("renewal_failure") or None,
            updated_at=float(data.get("updated_at") or 0.0),
        )


def _float_or_none(value: object) -> float | None:
    return float(value) if value is not None else None  # type: ignore[arg-type]


def _int_or_none(value: object) -> int | None:
    return int(value) if value is not None else None  # type: ignore[call-overload]


# Fields ``update`` may change: everything but identity, session and epoch (``claim_session`` owns those).
UPDATABLE = frozenset(DeviceRecord.__dataclass_fields__) - {"identity", "session_id", "epoch", "updated_at"}


def stored_value(name: str, value: object) -> object:
    """A field's value as JSON holds it (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True, slots=True)
class Telemetry:
    battery_level: float | None
    buttons: Buttons | None
    last_seen: float

    def fields(self) -> dict[str, object]:
        """As ``DeviceRecord`` fields (for ``update``)."""
        return {"battery_level": self.battery_level, "buttons": self.buttons, "last_seen": self.last_seen}


@dataclass(frozen=True, slots=True)
class Renewal:
    """A certificate renewal as the record keeps it."""

    cert_serial: int
    cert_issued: float  # notBefore
    cert_expires: float  # notAfter
    renewed_at: float

    def fields(self) -> dict[str, object]:
        """As ``DeviceRecord`` fields (for ``update``)."""
        return {
            "cert_serial": self.cert_serial,
            "cert_issued": self.cert_issued,
            "cert_expires": self.cert_expires,
            "renewed_at": self.renewed_at,
        }


class DeviceStore(Protocol):
    async def load(self, identity: Identity) -> DeviceRecord | None: ...
    async def list_devices(self, tenant: str | None) -> list[DeviceRecord]:
        """Every device of ``tenant`` (of every tenant when None) that ever claimed a session."""

    async def claim_session(
        self, identity: Identity, session_id: str, facts: dict[str, object] | None = None
    ) -> int:
        """The new epoch, with ``facts`` (UPDATABLE fields) written in the same step; 0 if revoked."""

    async def update(
        self, identity: Identity, changes: dict[str, object], session_id: str | None
    ) -> bool: ...
    async def set_mode(self, identity: Identity, mode: int, session_id: str | None) -> bool: ...
    async def record_telemetry(
        self, identity: Identity, telemetry: Telemetry, session_id: str | None
    ) -> bool: ...
    async def record_renewal(self, identity: Identity, renewal: Renewal) -> bool: ...
    async def record_renewal_failure(self, identity: Identity, reason: str, at: float) -> bool: ...
    async def probe(self) -> None:
        """A cheap write that fails exactly when other writes would (disk full, locked, down)."""

    async def close(self) -> None: ...


def _applies(record: DeviceRecord | None, session_id: str | None) -> bool:
    """A change made in ``session_id`` may land: unconditional, or that session is still current."""
    return session_id is None or (record is not None and record.session_id == session_id)


def _claimed(
    record: DeviceRecord | None, identity: Identity, session_id: str, facts: dict[str, object] | None
) -> DeviceRecord | None:
    """The record after a claim; None when the device is revoked (no session for it)."""
    base = record or DeviceRecord(identity)
    if base.revoked:
        return None
    return base.with_changes(session_id=session_id, epoch=base.epoch + 1, **checked_changes(facts or {}))


def checked_changes(changes: dict[str, object]) -> dict[str, object]:
    """``changes`` if every name is an ``UPDATABLE`` field, else ``ValueError`` (a bug, not input)."""
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    return changes


class Intents:
    """``set_mode``, ``record_telemetry`` and the renewal intents for every backend: all are
    ``update``s (each backend makes ``update`` atomic: a dict step, a transaction, a Lua script)."""

    async def update(self, identity: Identity, changes: dict[str, object], session_id: str | None) -> bool:
        raise NotImplementedError

    async def set_mode(self, identity: Identity, mode: int, session_id: str | None) -> bool:
        return await self.update(identity, {"mode": mode}, session_id)

    async def record_telemetry(
        self, identity: Identity, telemetry: Telemetry, session_id: str | None
    ) -> bool:
        return await self.update(identity, telemetry.fields(), session_id)

    async def record_renewal(self, identity: Identity, renewal: Renewal) -> bool:
        return await self.update(identity, renewal.fields(), None)

    async def record_renewal_failure(self, identity: Identity, reason: str, at: float) -> bool:
        return await self.update(identity, {"renewal_failed_at": at, "renewal_failure": reason}, None)


class MemoryStore(Intents):
    """Records in a dict; each intent is atomic because nothing awaits inside it."""

    def __init__(self) -> None:
        self._records: dict[Identity, DeviceRecord] = {}

    async def load(self, identity: Identity) -> DeviceRecord | None:
        return self._records.get(identity)

    async def list_devices(self, tenant: str | None) -> list[DeviceRecord]:
        return sorted(
            (r for r in self._records.values() if r.epoch > 0 and tenant in (None, r.identity.tenant)),
            key=lambda r: (r.identity.tenant, r.identity.device_id),
        )

    async def claim_session(
        self, identity: Identity, session_id: str, facts: dict[str, object] | None = None
    ) -> int:
        record = _claimed(self._records.get(identity), identity, session_id, facts)
        if record is None:
            return 0
        self._records[identity] = record
        return record.epoch

    async def update(self, identity: Identity, changes: dict[str, object], session_id: str | None) -> bool:
        record = self._records.get(identity)
        if not _applies(record, session_id):
            return False
        self._records[identity] = (record or DeviceRecord(identity)).with_changes(**checked_changes(changes))
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
            new = _claimed(record, identity, session_id, facts)
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
            if not _applies(record, session_id):
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
