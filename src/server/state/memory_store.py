"""Device records in a dict: the store for tests and for a server that keeps nothing.

Each intent is atomic because nothing awaits inside it.
"""

from __future__ import annotations

from auth.identity import Identity
from server.state.store import DeviceRecord, Intents, applies, checked_changes, claimed_record


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
        record = claimed_record(self._records.get(identity), identity, session_id, facts)
        if record is None:
            return 0
        self._records[identity] = record
        return record.epoch

    async def update(self, identity: Identity, changes: dict[str, object], session_id: str | None) -> bool:
        record = self._records.get(identity)
        if not applies(record, session_id):
            return False
        self._records[identity] = (record or DeviceRecord(identity)).with_changes(**checked_changes(changes))
        return True

    async def probe(self) -> None:
        return None

    async def close(self) -> None:
        return None
