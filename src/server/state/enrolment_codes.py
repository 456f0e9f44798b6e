"""One-time enrolment codes in the shared store: made here, kept only as a hash, taken once.

A code is 80 random bits (``CODE_BITS``), shown as ``XXXX-XXXX-XXXX-XXXX`` in base32 (no 0/1/8/9
to misread), and returned to the operator once. The store keeps its SHA-256 (a table entry keyed
by the hash, in the same backend as the device records, so every replica sees it); the code
itself is never stored or logged. SHA-256 without a salt is enough for 80-bit random secrets: no
dictionary reaches them. Using a code *takes* its entry atomically (``SharedData.take_entry``: a
Lua script on Redis, ``DELETE ... RETURNING`` on SQLite), so of two devices racing one code
exactly one gets it. Expired entries are refused when taken and pruned when codes are listed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from server.state.shared_data import SharedData

TABLE = "enrolment_codes"
CODE_BITS = 80
CODE_CHARS = CODE_BITS // 5  # base32: five bits a character
GROUP = 4
ID_BYTES = 8  # the public id of a code (names it in listings; unrelated to the code)


@dataclass(frozen=True)
class CodeRecord:
    """What a code stands for: one device of one tenant, until ``expires_at``."""

    id: str
    tenant: str
    device_id: str
    created_at: float
    expires_at: float
    created_by: str

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def decode(cls, raw: str) -> CodeRecord:
        data = json.loads(raw)
        return cls(
            id=str(data["id"]),
            tenant=str(data["tenant"]),
            device_id=str(data["device_id"]),
            created_at=float(data["created_at"]),
            expires_at=float(data["expires_at"]),
            created_by=str(data.get("created_by", "")),
        )

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


def new_code() -> str:
    raw = base64.b32encode(secrets.token_bytes(CODE_BITS // 8)).decode()[:CODE_CHARS]
    return "-".join(raw[i : i + GROUP] for i in range(0, CODE_CHARS, GROUP))


def normalise(code: str) -> str | None:
    """The code as generated (upper case, no separators), or None when it cannot be one."""
    text = code.upper().replace("-", "").replace(" ", "")
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    if len(text) != CODE_CHARS or not set(text) <= alphabet:
        return None
    return text


def code_hash(normalised: str) -> str:
    return hashlib.sha256(normalised.encode()).hexdigest()


class EnrolmentCodes:
    def __init__(self, data: SharedData, clock: Callable[[], float] = time.time) -> None:
        self._data = data
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    async def create(
        self, tenant: str, device_id: str, ttl_s: float, created_by: str
    ) -> tuple[str, CodeRecord]:
        """A new code for ``tenant``/``device_id``: (the code, shown once; its record)."""
        code = new_code()
        now = self._clock()
        record = CodeRecord(secrets.token_hex(ID_BYTES), tenant, device_id, now, now + ttl_s, created_by)
        normalised = normalise(code)
        assert normalised is not None
        await self._data.set_entry(TABLE, code_hash(normalised), record.encode())
        return code, record

    async def _all(self) -> dict[str, CodeRecord]:
        return {key: CodeRecord.decode(raw) for key, raw in (await self._data.entries(TABLE)).items()}

    async def pending(self, tenant: str | None) -> list[CodeRecord]:
        """Codes not used, cancelled or expired (of one tenant, or every tenant's); prunes expired ones."""
        now, found = self._clock(), []
        for key, record in (await self._all()).items():
            if record.expired(now):
                await self._data.take_entry(TABLE, key)
            elif tenant is None or record.tenant == tenant:
                found.append(record)
        return sorted(found, key=lambda r: (r.tenant, r.created_at, r.device_id))

    async def cancel(self, tenant: str | None, code_id: str) -> CodeRecord | None:
        """Remove the code ``code_id`` (if it is ``tenant``'s, when given); the record, or None."""
        for key, record in (await self._all()).items():
            if record.id == code_id and (tenant is None or record.tenant == tenant):
                raw = await self._data.take_entry(TABLE, key)
                return CodeRecord.decode(raw) if raw is not None else None
        return None

    async def take(self, normalised: str) -> CodeRecord | None:
        """Use a code: its record, removed in the same step (None: unknown, used or cancelled).
        The caller refuses an expired one (``CodeRecord.expired``): it is gone either way."""
        raw = await self._data.take_entry(TABLE, code_hash(normalised))
        return CodeRecord.decode(raw) if raw is not None else None
