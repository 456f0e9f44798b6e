"""Announcement schedules (issue 21): what a schedule is, when it fires, where it is kept.

A schedule is an announcement (a selector, a sound, a priority) with a timing:
one instant (``at``, local time in a zone) or a five-field cron expression read
in a zone. Occurrences are computed from the stored schedule alone, never held
in memory, so any node computes the same ones (see scheduler.py for who runs
them).

Local time is read the way cron reads it, with two rules for the days a zone
changes its clocks:

* a time that does not exist (02:30 on the spring-forward night in
  Europe/Berlin) runs at the first valid instant after it, the moment the
  clocks jump (03:00 new time); several such times of one night run once;
* a time that exists twice (02:30 on the autumn night) runs once, at its first
  occurrence (summer time).

Kept in the shared store: the schedules in one table (``schedules``, key
``tenant/id``), how far each has been handled in another (``schedule-cursor``,
written by the runners only, so an operator's pause never races a runner's
write), and each schedule's recent runs in a log of its own.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import time
import uuid
import zoneinfo
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

from comms.log_sampling import SampledLog
from server.state.shared_data import SharedData

log = logging.getLogger(__name__)
_unreadable = SampledLog()  # read on every tick of every node: a few lines, then a tally

TABLE, CURSORS = "schedules", "schedule-cursor"
MAX_CRON = 100
MAX_ZONE = 64
MAX_AT = 40
RECENT_RUNS = 20  # runs (or misses) each schedule keeps
RUNS_MAX_AGE_S = 90 * 86_400
MAX_GAP_MINUTES = 48 * 60  # a clock change never skips more (Samoa skipped one day)
SCAN_STEPS = 10_000  # cron times looked at per question, at most
CRON_FIELDS = "minute hour day-of-month month day-of-week"
_ID = re.compile(r"^[0-9a-f]{12}$")
_FIELD = re.compile(r"^[0-9*,/-]+$")  # standard cron: numbers, *, lists, ranges, steps
_NAMES = (  # and names in the month and day-of-week fields
    re.compile(r"JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC"),
    re.compile(r"SUN|MON|TUE|WED|THU|FRI|SAT"),
)

RAN, MISSED, FAILED = "ran", "missed", "failed"


class ScheduleError(ValueError):
    """A timing, zone or schedule the service cannot keep, in our own words."""


def zone_of(name: str) -> ZoneInfo:
    name = name or "UTC"
    if len(name) > MAX_ZONE:
        raise ScheduleError(f"time zone is {len(name)} characters; at most {MAX_ZONE}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown time zone {name[:MAX_ZONE]!r} (use an IANA name like Europe/Berlin)"
        ) from None


@functools.cache
def _iana_names() -> frozenset[str]:
    """The zone names of this node's tzdata (read once: it walks the directory), without the
    ``posix/`` and ``right/`` copies (``right/`` counts leap seconds: its clocks are 27 s off)."""
    return frozenset(zoneinfo.available_timezones())


def new_zone(name: str) -> ZoneInfo:
    """A zone a new schedule may name: one every node reads alike. Refused: a file of the tzdata
    that is not a zone of its list (``posixrules``, ``right/UTC``) and ``localtime`` (each node's own)."""
    zone = zone_of(name)
    if zone.key == "localtime":
        raise ScheduleError("'localtime' is each server's own zone; name the zone (like Europe/Berlin)")
    if zone.key not in _iana_names():
        raise ScheduleError(f"unknown time zone {zone.key!r} (use an IANA name like Europe/Berlin)")
    return zone


def instant(local: datetime, zone: ZoneInfo) -> float:
    """The unix time of the wall-clock time ``local`` (naive) in ``zone``: a repeated time's first
    occurrence; a time the clocks skip is the first valid minute after it."""
    aware = local.replace(tzinfo=zone, fold=0)
    if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == local:
        return aware.timestamp()
    probe = local.replace(second=0, microsecond=0)
    for _ in range(MAX_GAP_MINUTES):
        probe += timedelta(minutes=1)
        aware = probe.replace(tzinfo=zone)
        if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == probe:
            return aware.timestamp()
    raise ScheduleError(f"{local.isoformat()} does not exist in {zone.key}")  # pragma: no cover


@dataclass(frozen=True)
class Timing:
    """When a schedule fires: ``at`` (one instant) or ``cron`` in ``zone``."""

    zone: str
    at: float | None = None
    cron: str = ""

    def after(self, since: float, count: int, until: float | None = None) -> list[float]:
        """Up to ``count`` occurrences strictly after ``since`` (and at most ``until``), in order."""
        return self.due(since, count, until)[0]

    def due(self, since: float, count: int, until: float | None) -> tuple[list[float], float | None]:
        """``after``'s occurrences, and the first one after ``until`` when one was seen on the way
        (one computation: the scan's question)."""
        if self.at is not None:
            found = [self.at] if self.at > since else []
        else:
            found = cron_after(self.cron, zone_of(self.zone), since, count, until)
        within = [t for t in found if until is None or t <= until][:count]
        beyond = [t for t in found if until is not None and t > until]
        return within, beyond[0] if beyond else None


def cron_after(expression: str, zone: ZoneInfo, since: float, count: int, until: float | None) -> list[float]:
    """The cron's instants after ``since``: its wall-clock times read in ``zone`` (see the module's
    rules for clock changes), each instant once."""
    local = datetime.fromtimestamp(since, zone).replace(tzinfo=None)
    times = croniter(expression, local)
    found: list[float] = []
    for _ in range(SCAN_STEPS):
        if len(found) >= count:
            break
        at = instant(times.get_next(datetime), zone)
        if at > since and (not found or at > found[-1]):
            found.append(at)
        if until is not None and at > until:
            break
    return found


def parse_timing(at: str, cron: str, zone_name: str, now: float) -> Timing:
    """The timing an operator asked for, or ``ScheduleError`` saying what is wrong with it."""
    zone = new_zone(zone_name)
    if at and cron:
        raise ScheduleError("give the time as one instant (at) or a cron expression, not both")
    if not at and not cron:
        raise ScheduleError("give the time: one instant (at) or a cron expression")
    if cron:
        return Timing(zone.key, cron=check_cron(cron, zone, now))
    if len(at) > MAX_AT:
        raise ScheduleError(f"at is {len(at)} characters; give a local time like 2026-12-03T09:00")
    try:
        local = datetime.fromisoformat(at)
    except ValueError:
        raise ScheduleError(f"at {at!r} is not a time like 2026-12-03T09:00") from None
    when = local.timestamp() if local.tzinfo is not None else instant(local, zone)
    if when <= now:
        shown = datetime.fromtimestamp(now, zone).strftime("%Y-%m-%dT%H:%M:%S")
        raise ScheduleError(f"at {at} ({zone.key}) is in the past; it is {shown} there now")
    return Timing(zone.key, at=when)


def check_cron(expression: str, zone: ZoneInfo, now: float) -> str:
    expression = " ".join(expression.split())
    if len(expression) > MAX_CRON:
        raise ScheduleError(f"the cron expression is {len(expression)} characters; at most {MAX_CRON}")
    fields = expression.split(" ")
    if len(fields) != 5 or expression.startswith("@"):
        raise ScheduleError(
            f"a cron expression has five fields ({CRON_FIELDS}); {expression!r} has {len(fields)}"
        )
    for index, text in enumerate(fields):  # croniter's extensions (R: random, H: hashed, L, #, ?) refused
        plain = _NAMES[index - 3].sub("0", text.upper()) if index >= 3 else text
        if not _FIELD.fullmatch(plain):
            name = CRON_FIELDS.split(" ")[index]
            raise ScheduleError(
                f"the {name} field {text!r} is not standard cron (numbers, *, lists a,b, ranges a-b, "
                "steps /n; names in month and day-of-week)"
            )
    try:
        if not croniter.is_valid(expression):
            raise ScheduleError(f"{expression!r} is not a valid cron expression ({CRON_FIELDS})")
        first = cron_after(expression, zone, now, 1, None)
    except CroniterBadDateError:
        raise ScheduleError(f"the cron expression {expression!r} never fires") from None
    except (CroniterBadCronError, CroniterError, ValueError, KeyError):
        raise ScheduleError(f"{expression!r} is not a valid cron expression ({CRON_FIELDS})") from None
    if not first:
        raise ScheduleError(f"the cron expression {expression!r} never fires")
    return expression


@dataclass(frozen=True)
class Schedule:
    id: str
    tenant: str
    selector: str
    mode: int | None  # the sound: a mode's ...
    sound_name: str  # ... or an upload's name
    sound_label: str  # in words, as chosen at creation
    timing: Timing
    at_text: str = ""  # as the operator gave it
    priority: int = 0
    resume: bool = True
    paused: bool = False
    created_by: str = ""
    created_at: float = field(default_factory=time.time)
    since: float = 0.0  # occurrences after this count (creation, or the last resume)

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.id}"

    @property
    def one_shot(self) -> bool:
        return self.timing.at is not None

    def encode(self) -> str:
        data = asdict(self)
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def decode(cls, raw: str) -> Schedule:
        data = json.loads(raw)
        data["timing"] = Timing(**data["timing"])
        return cls(**data)

    def state(self, cursor: float, now: float) -> str:
        if self.timing.at is not None and max(cursor, self.since) >= self.timing.at:
            return "done"  # a one-shot after its run (or its miss), or resumed after its time
        return "paused" if self.paused else "active"

    def next_runs(self, cursor: float, now: float, count: int) -> list[float]:
        if self.paused:
            return []
        try:
            return self.timing.after(max(self.since, cursor, now), count)
        except ScheduleError:  # its zone is gone from this node's tzdata: it cannot run here
            return []


def new_schedule(tenant: str, **fields: Any) -> Schedule:
    now = time.time()
    return Schedule(id=uuid.uuid4().hex[:12], tenant=tenant, created_at=now, since=now, **fields)


@dataclass(frozen=True)
class Run:
    """One occurrence's run (or a miss: ``missed`` occurrences up to ``occurrence``)."""

    occurrence: float
    result: str  # RAN, MISSED or FAILED
    node: str
    at: float = field(default_factory=time.time)
    announcement: str = ""
    targeted: int = 0
    started: int = 0
    offline: int = 0
    refused: int = 0
    missed: int = 0
    message: str = ""

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def decode(cls, raw: str) -> Run:
        return cls(**json.loads(raw))


def runs_log(schedule: Schedule) -> str:
    return f"schedule-runs:{schedule.key}"


def _claim_key(schedule: Schedule, occurrence: float) -> str:
    return f"schedule:{schedule.key}@{occurrence!r}"


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def valid_id(text: str) -> bool:
    return bool(_ID.fullmatch(text))


class ScheduleStore:
    """The schedules of every tenant in the shared store (pass a guarded ``SharedData``)."""

    def __init__(self, data: SharedData) -> None:
        self._data = data
        self._decoded: dict[str, Schedule] = {}  # stored text: its schedule (the last read's, no more)

    async def all(self) -> list[Schedule]:
        found = []
        decoded, self._decoded = self._decoded, {}
        for key, raw in (await self._data.entries(TABLE)).items():
            try:
                schedule = decoded.get(raw) or Schedule.decode(raw)
                self._decoded[raw] = schedule
                found.append(schedule)
            except (ValueError, KeyError, TypeError) as exc:  # written by a newer or broken version
                held_back = _unreadable.admit(key)
                if held_back is not None:
                    log.warning(
                        "schedule.unreadable",
                        extra={"key": key[:120], "error": type(exc).__name__, "suppressed": held_back},
                    )
        return sorted(found, key=lambda s: (s.tenant, s.created_at))

    async def of_tenant(self, tenant: str) -> list[Schedule]:
        return [s for s in await self.all() if s.tenant == tenant]

    async def get(self, tenant: str, schedule_id: str) -> Schedule | None:
        raw = await self._data.get_entry(TABLE, f"{tenant}/{schedule_id}")
        try:
            return Schedule.decode(raw) if raw is not None else None
        except (ValueError, KeyError, TypeError):  # logged by all(): as good as absent
            return None

    async def put(self, schedule: Schedule) -> None:
        await self._data.set_entry(TABLE, schedule.key, schedule.encode())

    async def delete(self, schedule: Schedule) -> None:
        await self._data.set_entry(TABLE, schedule.key, None)
        await self._data.set_entry(CURSORS, schedule.key, None)
        await self._data.drop_log(runs_log(schedule))  # else kept for ever: nothing trims it again

    async def set_paused(self, schedule: Schedule, paused: bool) -> Schedule:
        changed = replace(schedule, paused=paused, since=schedule.since if paused else time.time())
        await self.put(changed)
        return changed

    async def cursors(self) -> dict[str, float]:
        """Every schedule's cursor; one that is not a number (written by hand, say) is as good as
        absent (the schedule's own start counts) and stops no other."""
        return {
            key: number
            for key, value in (await self._data.entries(CURSORS)).items()
            if (number := _number(value)) is not None
        }

    async def cursor(self, schedule: Schedule) -> float:
        raw = await self._data.get_entry(CURSORS, schedule.key)
        return (_number(raw) or 0.0) if raw is not None else 0.0

    async def advance(self, schedule: Schedule, occurrence: float) -> None:
        """Occurrences up to ``occurrence`` are handled (by this node or another): never moved back."""
        if occurrence > await self.cursor(schedule) and await self.get(schedule.tenant, schedule.id):
            await self._data.set_entry(CURSORS, schedule.key, repr(occurrence))

    async def claim(self, schedule: Schedule, occurrence: float, node: str, ttl_s: float) -> bool:
        """The one right to run (or record the miss of) this occurrence, across every node."""
        return await self._data.claim(_claim_key(schedule, occurrence), node, ttl_s)

    async def extend(self, schedule: Schedule, occurrence: float, node: str, ttl_s: float) -> bool:
        """The claim held ``ttl_s`` from now if this node still has it (False: its lease ran out)."""
        return await self._data.extend(_claim_key(schedule, occurrence), node, ttl_s)

    async def release(self, schedule: Schedule, occurrence: float, node: str) -> None:
        """Give the occurrence back (its run did not start): the claim freed and the cursor moved
        back to just before it, so another node takes it at its next scan. The occurrences between
        are looked at again; they are claimed (by whoever had them), so none runs twice."""
        await self._data.release(_claim_key(schedule, occurrence), node)
        before = math.nextafter(occurrence, -math.inf)
        if await self.cursor(schedule) > before and await self.get(schedule.tenant, schedule.id):
            await self._data.set_entry(CURSORS, schedule.key, repr(before))

    async def record(self, schedule: Schedule, run: Run) -> None:
        """Into the schedule's recent runs, while it exists (a run that ends after the delete
        leaves nothing behind; its audit event still says what happened)."""
        if await self.get(schedule.tenant, schedule.id) is not None:
            await self._data.append(runs_log(schedule), run.encode(), RECENT_RUNS, RUNS_MAX_AGE_S)

    async def runs(self, schedule: Schedule, limit: int = RECENT_RUNS) -> list[Run]:
        return [Run.decode(raw) for _, raw in await self._data.recent(runs_log(schedule), limit, None)]
