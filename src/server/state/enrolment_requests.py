"""Open enrolment in the shared store: each tenant's claim code, and the requests waiting for an
operator's decision.

A claim code is made like a one-time code (``enrolment_codes.new_code``: 80 random bits), shown
once and kept only as its SHA-256, but it is *not* taken when used: any number of devices may
queue a request with it, and it stays until it is rotated (a new one replaces it) or disabled.
It grants nothing by itself: a request gets a certificate only once an operator approves it.

A pending request keeps the device's public key (so only its holder can collect the outcome),
the key's fingerprint, the device's proposed id, the peer address and when it expires. Its
``state`` goes ``pending`` -> ``approved`` (with the device id the operator chose) or ``denied``;
the device's next poll takes it (the store's atomic ``take_entry``: one certificate per
approval). Expired requests are pruned whenever requests are listed or added. The cap per tenant
is checked against the store's count under a lock of this process; replicas racing may exceed it
by at most one request each.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from server.state.enrolment_codes import ID_BYTES, code_hash, new_code, normalise
from server.state.shared_data import SharedData

CLAIM_TABLE = "enrolment_claim_codes"
PENDING_TABLE = "enrolment_pending"
PENDING, APPROVED, DENIED = "pending", "approved", "denied"


@dataclass(frozen=True)
class ClaimRecord:
    id: str
    tenant: str
    created_at: float
    created_by: str

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def decode(cls, raw: str) -> ClaimRecord:
        data = json.loads(raw)
        return cls(str(data["id"]), str(data["tenant"]), float(data["created_at"]), str(data["created_by"]))


@dataclass(frozen=True)
class PendingRecord:
    id: str
    tenant: str
    proposed_id: str
    public_key: str  # SubjectPublicKeyInfo, DER, base64
    fingerprint: str
    peer: str
    created_at: float
    expires_at: float
    state: str = PENDING
    device_id: str = ""
    decided_by: str = ""

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def decode(cls, raw: str) -> PendingRecord:
        data = json.loads(raw)
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})

    def public_der(self) -> bytes:
        return base64.b64decode(self.public_key)

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


class ClaimCodes:
    """One claim code per tenant at most."""

    def __init__(self, data: SharedData, clock: Callable[[], float] = time.time) -> None:
        self._data = data
        self._clock = clock

    async def _of(self, tenant: str) -> dict[str, ClaimRecord]:
        found = {key: ClaimRecord.decode(raw) for key, raw in (await self._data.entries(CLAIM_TABLE)).items()}
        return {key: record for key, record in found.items() if record.tenant == tenant}

    async def current(self, tenant: str) -> ClaimRecord | None:
        records = sorted((await self._of(tenant)).values(), key=lambda r: r.created_at)
        return records[-1] if records else None

    async def set(self, tenant: str, created_by: str) -> tuple[str, ClaimRecord]:
        """A new claim code for ``tenant`` (shown once), replacing its previous one if any."""
        previous = await self._of(tenant)
        code = new_code()
        normalised = normalise(code)
        assert normalised is not None
        record = ClaimRecord(secrets.token_hex(ID_BYTES), tenant, self._clock(), created_by)
        await self._data.set_entry(CLAIM_TABLE, code_hash(normalised), record.encode())
        for key in previous:  # after the new one is in: the tenant is never without a code mid-way
            await self._data.take_entry(CLAIM_TABLE, key)
        return code, record

    async def disable(self, tenant: str) -> ClaimRecord | None:
        """Remove the tenant's claim code; what it was, or None when there was none."""
        gone = None
        for key in await self._of(tenant):
            raw = await self._data.take_entry(CLAIM_TABLE, key)
            gone = ClaimRecord.decode(raw) if raw is not None else gone
        return gone

    async def lookup(self, normalised: str) -> ClaimRecord | None:
        raw = await self._data.get_entry(CLAIM_TABLE, code_hash(normalised))
        return ClaimRecord.decode(raw) if raw is not None else None


class PendingRequests:
    def __init__(self, data: SharedData, clock: Callable[[], float] = time.time) -> None:
        self._data = data
        self._clock = clock
        self._adding = asyncio.Lock()

    def now(self) -> float:
        return self._clock()

    async def listed(self, tenant: str | None) -> list[PendingRecord]:
        """Requests not expired (one tenant's, or every tenant's), oldest first; prunes expired ones."""
        now, found = self._clock(), []
        for key, raw in (await self._data.entries(PENDING_TABLE)).items():
            record = PendingRecord.decode(raw)
            if record.expired(now):
                await self._data.take_entry(PENDING_TABLE, key)
            elif tenant is None or record.tenant == tenant:
                found.append(record)
        return sorted(found, key=lambda r: (r.tenant, r.created_at, r.id))

    async def add(
        self,
        tenant: str,
        proposed_id: str,
        public_der: bytes,
        fingerprint: str,
        peer: str,
        ttl_s: float,
        cap: int,
    ) -> PendingRecord | None:
        """Queue a request; None when ``tenant`` has ``cap`` requests already."""
        async with self._adding:
            if len(await self.listed(tenant)) >= cap:
                return None
            now = self._clock()
            record = PendingRecord(
                id=secrets.token_hex(ID_BYTES),
                tenant=tenant,
                proposed_id=proposed_id,
                public_key=base64.b64encode(public_der).decode(),
                fingerprint=fingerprint,
                peer=peer,
                created_at=now,
                expires_at=now + ttl_s,
            )
            await self._data.set_entry(PENDING_TABLE, record.id, record.encode())
            return record

    async def get(self, request_id: str) -> PendingRecord | None:
        raw = await self._data.get_entry(PENDING_TABLE, request_id)
        return PendingRecord.decode(raw) if raw is not None else None

    async def decide(
        self, tenant: str | None, request_id: str, state: str, device_id: str, by: str
    ) -> PendingRecord | None:
        """Approve or deny a pending request (``tenant``'s, when given); the updated record, or None
        when there is no such undecided, unexpired request."""
        record = await self.get(request_id)
        if record is None or (tenant is not None and record.tenant != tenant):
            return None
        if record.state != PENDING or record.expired(self._clock()):
            return None
        decided = replace(record, state=state, device_id=device_id, decided_by=by)
        await self._data.set_entry(PENDING_TABLE, request_id, decided.encode())
        return decided

    async def take(self, request_id: str) -> PendingRecord | None:
        """Remove a request and return it, atomically (of two pollers only one gets it)."""
        raw = await self._data.take_entry(PENDING_TABLE, request_id)
        return PendingRecord.decode(raw) if raw is not None else None
