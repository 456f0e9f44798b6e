"""The schedule runner: on every node, each occurrence of every schedule runs exactly once.

Every node runs the same loop (every ``tick_s``): read the schedules and their
cursors from the shared store, compute each active schedule's occurrences after
its cursor (from the stored schedule alone: a restarted node, or another node
after one is lost, computes the same ones), and for each occurrence that is
due take its *claim* in the shared store — an atomic take-if-absent with an
expiry (Redis ``SET NX PX``; a primary-key insert in SQLite; a dict in memory),
keyed by schedule and occurrence. Exactly one node (or worker) wins it and
runs the announcement; the others move on. Whoever handled an occurrence moves
the schedule's cursor past it.

An occurrence is due ``lead_s`` before its instant (the announcer then starts
it at about that instant). One that could not start within ``grace_s`` of its
instant (every node was down, or the store was) is not played late: the node
that claims it records it as missed (one record for the occurrences one scan
found missed). A run's result (targeted/started/offline/refused) and each miss
go into the schedule's recent runs and, through ``report``, the audit log.

A claim outlives its occurrence by far (``grace_s`` plus a day), so no node
that still sees the occurrence as due can take it again. A node that dies
between winning a claim and starting the announcement loses that occurrence
(it is claimed, so nobody else runs it): at most once, never twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from comms.log_sampling import SampledLog
from server.announce.announcer import Announcer
from server.announce.schedule import FAILED, MISSED, RAN, Run, Schedule, ScheduleStore
from server.audio.tenant_sounds import SoundRejected, TenantSounds
from server.errors import StoreUnavailable, describe
from server.fleet.labels import BadLabel, DeviceLabels, parse_selector
from server.fleet.node import Fleet
from server.supervision import TaskOwner

log = logging.getLogger(__name__)
_scan_failures = SampledLog()  # a broken schedule fails every tick: a few lines, not one a second

CLAIM_EXTRA_S = 86_400.0  # a claim is held this long past the grace
MAX_SCAN = 1000  # occurrences one scan of a schedule looks at (a long outage is worked off over ticks)

Report = Callable[[Schedule, Run], Awaitable[None]]


class Scheduler:
    def __init__(
        self,
        store: ScheduleStore,
        fleet: Fleet,
        labels: DeviceLabels,
        sounds: TenantSounds,
        announcer: Announcer,
        report: Report,
        tick_s: float,
        grace_s: float,
    ) -> None:
        self.store = store
        self._fleet = fleet
        self._labels = labels
        self._sounds = sounds
        self._announcer = announcer
        self._report = report
        self.tick_s = tick_s
        self.grace_s = grace_s
        self._runs = TaskOwner("schedule-runs")
        self.ticks = 0  # scans done (tests wait on it)

    @property
    def node(self) -> str:
        return self._fleet.node_id

    async def close(self) -> None:
        await self._runs.close()

    async def run(self) -> None:
        """The loop (supervised by the server: a tick that raises is logged and the loop restarted)."""
        while True:
            try:
                await self.tick()
            except StoreUnavailable:  # the store probe reports the outage; due runs wait for the grace
                log.debug("schedule.store_unavailable")
            await asyncio.sleep(self.tick_s)

    async def tick(self) -> None:
        now = time.time()
        schedules = await self.store.all()
        cursors = await self.store.cursors()
        for schedule in schedules:
            if schedule.paused:
                continue
            try:
                await self._handle(schedule, max(schedule.since, cursors.get(schedule.key, 0.0)), now)
            except StoreUnavailable:
                raise
            except Exception as exc:  # one schedule we cannot read (a zone gone from tzdata) stops no other
                held_back = _scan_failures.admit(schedule.key)
                if held_back is not None:
                    log.error(
                        "schedule.scan_failed",
                        extra={"schedule": schedule.id, "error": describe(exc), "suppressed": held_back},
                    )
        self.ticks += 1

    async def _handle(self, schedule: Schedule, since: float, now: float) -> None:
        due = schedule.timing.after(since, MAX_SCAN, until=now + self._announcer.lead_s)
        if not due:
            return
        ttl = self.grace_s + CLAIM_EXTRA_S
        missed = [t for t in due if now - t > self.grace_s]
        won = [t for t in missed if await self.store.claim(schedule, t, self.node, ttl)]
        if won:
            run = Run(won[-1], MISSED, self.node, missed=len(won), message=self._missed_text(won))
            log.warning(
                "schedule.missed",
                extra={"schedule": schedule.id, "tenant": schedule.tenant, "occurrences": len(won)},
            )
            await self._finish(schedule, run)
        for occurrence in due[len(missed) :]:
            if await self.store.claim(schedule, occurrence, self.node, ttl):
                self._runs.spawn(self._perform(schedule, occurrence), f"run:{schedule.id}")
        await self.store.advance(schedule, due[-1])

    def _missed_text(self, won: list[float]) -> str:
        many = f"{len(won)} occurrences" if len(won) > 1 else "the occurrence"
        return f"{many} could not start within the grace of {self.grace_s:g} s"

    async def _perform(self, schedule: Schedule, occurrence: float) -> None:
        try:
            run = await self._announce(schedule, occurrence)
        except Exception as exc:
            log.exception("schedule.run_failed", extra={"schedule": schedule.id, "tenant": schedule.tenant})
            run = Run(occurrence, FAILED, self.node, message=f"the run failed: {describe(exc)}"[:200])
        await self._finish(schedule, run)

    async def _announce(self, schedule: Schedule, occurrence: float) -> Run:
        current = await self.store.get(schedule.tenant, schedule.id)
        if current is None or current.paused:  # deleted or paused since the scan: nothing to do
            return Run(occurrence, FAILED, self.node, message="paused or deleted before the run")
        tenant = current.tenant
        try:
            choice = await self._sounds.choose(tenant, mode=current.mode, name=current.sound_name)
            selector = parse_selector(current.selector)
        except (LookupError, SoundRejected, BadLabel) as exc:  # the sound was deleted since, say
            return Run(occurrence, FAILED, self.node, message=str(exc)[:200])
        views = await self._fleet.devices(tenant, lambda record: record.epoch > 0)
        known = await self._labels.of_tenant(tenant)
        devices = [
            v.identity.device_id for v in views if selector.matches(known.get(v.identity.device_id, {}))
        ]
        announcement, outcome = await self._announcer.announce(
            tenant, devices, choice, current.priority, current.resume
        )
        return Run(
            occurrence,
            RAN,
            self.node,
            announcement=announcement.id,
            targeted=len(devices),
            started=len(outcome.started),
            offline=len(outcome.offline),
            refused=len(outcome.refused),
        )

    async def _finish(self, schedule: Schedule, run: Run) -> None:
        log.info(
            "schedule.run",
            extra={
                "schedule": schedule.id,
                "tenant": schedule.tenant,
                "result": run.result,
                "occurrence": run.occurrence,
                "targeted": run.targeted,
                "started": run.started,
                "late_s": round(run.at - run.occurrence, 3),
            },
        )
        try:
            await self.store.record(schedule, run)
        except Exception as exc:  # the store is down: the audit (log line first) still has it
            log.error("schedule.record_failed", extra={"schedule": schedule.id, "error": describe(exc)})
        await self._report(schedule, run)
