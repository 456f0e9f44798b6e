"""The audit log: every operator action that changes something, and every refused operator call.

Append-only in the shared store (``SharedData`` logs), one log per tenant plus
one for the platform (every event, for platform operators), each kept for
``keep`` events and ``max_age_s``. Every event is also one ``audit`` log line,
so an event survives even when the store is down at that moment.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field

from server.shared_data import SharedData

log = logging.getLogger(__name__)

PLATFORM_LOG = "audit:_platform"
_PAGE_TOKEN = re.compile(r"^[0-9]{1,20}(-[0-9]{1,20})?$")
MAX_ENTRY_ID = 2**63 - 1
SCAN_LIMIT = 20_000  # entries a filtered listing reads at most per page


class BadPageToken(ValueError):
    """A page token this log never handed out."""


@dataclass(frozen=True)
class AuditEvent:
    operator: str  # spiffe id ("" when the caller had no usable operator certificate)
    role: str
    tenant: str  # "" when the call named no tenant we could trust
    action: str  # the method name
    target: str
    parameters: dict[str, object]
    result: str  # gRPC status code name
    message: str = ""
    request_id: str = ""
    time: float = field(default_factory=time.time)
    id: str = ""

    @property
    def refused(self) -> bool:
        return self.result != "OK"

    def encode(self) -> str:
        data = asdict(self)
        data.pop("id")
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def decode(cls, entry_id: str, raw: str) -> AuditEvent:
        data = json.loads(raw)
        return cls(
            operator=str(data.get("operator", "")),
            role=str(data.get("role", "")),
            tenant=str(data.get("tenant", "")),
            action=str(data.get("action", "")),
            target=str(data.get("target", "")),
            parameters=dict(data.get("parameters") or {}),
            result=str(data.get("result", "")),
            message=str(data.get("message", "")),
            request_id=str(data.get("request_id", "")),
            time=float(data.get("time", 0.0)),
            id=entry_id,
        )


@dataclass(frozen=True)
class AuditFilter:
    action: str = ""
    device_id: str = ""
    operator: str = ""  # operator name (the last part of its spiffe id)
    refused_only: bool = False

    def admits(self, event: AuditEvent) -> bool:
        return (
            (not self.action or event.action == self.action)
            and (not self.device_id or event.target == self.device_id)
            and (not self.operator or event.operator.rsplit("/", 1)[-1] == self.operator)
            and (not self.refused_only or event.refused)
        )


def valid_page_token(token: str) -> bool:
    """An entry id as the logs hand them out: ``N`` (SQLite, memory) or ``MS-SEQ`` (a Redis stream),
    each part within a signed 64-bit integer, so no backend ever sees a number it cannot hold."""
    return bool(_PAGE_TOKEN.fullmatch(token)) and all(int(part) <= MAX_ENTRY_ID for part in token.split("-"))


def audit_log_fields(event: AuditEvent) -> dict[str, object]:
    """The event as log fields: ``message`` is the log record's own, so it is logged as ``detail``."""
    fields = asdict(event)
    fields["detail"] = fields.pop("message")
    return fields


def tenant_log(tenant: str) -> str:
    return f"audit:tenant:{tenant}"


class AuditLog:
    def __init__(self, data: SharedData, keep: int, max_age_s: float) -> None:
        self._data = data
        self._keep = keep
        self._max_age_s = max_age_s

    async def record(self, event: AuditEvent) -> None:
        """Log the event, then append it to its tenant's log and the platform log.

        A failing store costs the stored copy only (logged loudly); the action itself
        was already decided and the log line holds the event.
        """
        level = logging.WARNING if event.refused else logging.INFO
        log.log(level, "audit", extra=audit_log_fields(event))
        entry = event.encode()
        try:
            if event.tenant:
                await self._data.append(tenant_log(event.tenant), entry, self._keep, self._max_age_s)
            await self._data.append(PLATFORM_LOG, entry, self._keep, self._max_age_s)
        except Exception as exc:
            log.error(
                "audit.store_failed",
                extra={"request_id": event.request_id, "error": f"{type(exc).__name__}: {exc}"[:200]},
            )

    async def list(
        self, tenant: str | None, limit: int, page_token: str = "", where: AuditFilter | None = None
    ) -> tuple[list[AuditEvent], str]:
        """Newest first: (events, next page token or ""). ``tenant`` None: every tenant's."""
        if page_token and not valid_page_token(page_token):
            raise BadPageToken("page_token was not issued by this audit log")
        where = where or AuditFilter()
        name = PLATFORM_LOG if tenant is None else tenant_log(tenant)
        found: list[AuditEvent] = []
        before, scanned = page_token or None, 0
        while len(found) < limit and scanned < SCAN_LIMIT:
            batch = await self._data.recent(name, max(limit, 100), before)
            if not batch:
                return found, ""
            for entry_id, raw in batch:
                scanned += 1
                before = entry_id
                event = AuditEvent.decode(entry_id, raw)
                if where.admits(event):
                    found.append(event)
                    if len(found) == limit:
                        return found, entry_id
        return found, before or ""
