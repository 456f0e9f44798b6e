"""The audit log: every operator action that changes something, and every refused operator call.

Append-only in the shared store (``SharedData`` logs), one log per tenant plus
one for the platform (every event, for platform operators), each kept for
``keep`` events and ``max_age_s``. Every event is also one ``audit`` log line,
so an event survives even when the store is down at that moment; the stored copy
then waits in memory (``BACKLOG_LIMIT`` entries, oldest first) and is written once
the store is back (``keep_storing``, or before the next listing), so the audit log
also shows what was refused during the outage. A restart meanwhile loses only the
stored copy of what waited; the log lines remain.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import deque
from dataclasses import asdict, dataclass, field

from server.errors import describe
from server.state.shared_data import SharedData

log = logging.getLogger(__name__)

PLATFORM_LOG = "audit:_platform"
_PAGE_TOKEN = re.compile(r"^[0-9]{1,20}(-[0-9]{1,20})?$")
MAX_ENTRY_ID = 2**63 - 1
SCAN_LIMIT = 20_000  # entries a filtered listing reads at most per page
BACKLOG_LIMIT = 10_000  # log entries waiting for the store; beyond it the oldest go (their log lines stay)


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
    def __init__(self, data: SharedData, keep: int, max_age_s: float, retry_s: float = 1.0) -> None:
        self._data = data
        self._keep = keep
        self._max_age_s = max_age_s
        self._retry_s = retry_s
        self._backlog: deque[tuple[str, str]] = deque()  # (log name, entry) not stored yet, oldest first
        self._storing = asyncio.Lock()  # one writer: each waiting entry is stored once, in order

    @property
    def pending(self) -> int:
        """Log entries waiting for the store."""
        return len(self._backlog)

    async def record(self, event: AuditEvent) -> None:
        """Log the event, then append it to its tenant's log and the platform log.

        A failing store delays the stored copy (logged loudly; ``keep_storing`` writes it
        later); the action itself was already decided and the log line holds the event.
        """
        level = logging.WARNING if event.refused else logging.INFO
        log.log(level, "audit", extra=audit_log_fields(event))
        entry = event.encode()
        for name in ([tenant_log(event.tenant)] if event.tenant else []) + [PLATFORM_LOG]:
            self._wait(name, entry)
        try:
            await self._store_waiting()
        except Exception as exc:
            log.error(
                "audit.store_failed",
                extra={
                    "request_id": event.request_id,
                    "pending": len(self._backlog),
                    "error": describe(exc),
                },
            )

    def _wait(self, name: str, entry: str) -> None:
        if len(self._backlog) >= BACKLOG_LIMIT:
            self._backlog.popleft()
            log.error("audit.backlog_full", extra={"dropped": 1, "limit": BACKLOG_LIMIT})
        self._backlog.append((name, entry))

    async def _store_waiting(self) -> int:
        """Store the waiting entries, oldest first; how many. Raises on the first store failure."""
        stored = 0
        async with self._storing:
            while self._backlog:
                name, entry = self._backlog[0]
                await self._data.append(name, entry, self._keep, self._max_age_s)
                self._backlog.popleft()
                stored += 1
        return stored

    async def keep_storing(self) -> None:
        """Background loop (owned by the server): store what waited out a store outage."""
        while True:
            await asyncio.sleep(self._retry_s)
            if not self._backlog:
                continue
            with contextlib.suppress(Exception):  # still down: record() logged it; try again later
                stored = await self._store_waiting()
                log.info("audit.stored_late", extra={"entries": stored})

    async def list(
        self, tenant: str | None, limit: int, page_token: str = "", where: AuditFilter | None = None
    ) -> tuple[list[AuditEvent], str]:
        """Newest first: (events, next page token or ""). ``tenant`` None: every tenant's."""
        if page_token and not valid_page_token(page_token):
            raise BadPageToken("page_token was not issued by this audit log")
        where = where or AuditFilter()
        if self._backlog:  # what waited out an outage first, so the listing shows it
            with contextlib.suppress(Exception):
                await self._store_waiting()
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
