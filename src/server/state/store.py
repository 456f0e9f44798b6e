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

This module holds the record, the protocol and what every backend shares; one module per
backend: ``MemoryStore`` (memory_store.py; tests), ``SqliteStore`` (sqlite_store.py; the embedded
default, one process; all calls on one thread so the loop never blocks; the file is checked at
open, so a corrupt or unwritable file stops start-up with one clear line) and ``RedisStore``
(redis_store.py; several processes and replicas).
A store raises on failure; ``StoreGuard`` decides what that means for live devices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from auth.identity import Identity

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


def applies(record: DeviceRecord | None, session_id: str | None) -> bool:
    """A change made in ``session_id`` may land: unconditional, or that session is still current."""
    return session_id is None or (record is not None and record.session_id == session_id)


def claimed_record(
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


class StateFileError(OSError):
    """The state store cannot be used at start-up; the message says which and what to do."""
