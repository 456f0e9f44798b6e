"""The schedule runner: on every node, each occurrence of every schedule runs exactly once.

Every node runs the same loop (every ``tick_s``): read the schedules and their
cursors from the shared store, compute each active schedule's occurrences after
its cursor (from the stored schedule alone: a restarted node, or another node
after one is lost, computes the same ones), and for each occurrence that is
due take its *claim* in the shared store — an atomic take-if-absent with an
expiry (Redis ``SET NX PX``; a primary-key insert in SQLite; a dict in memory),
keyed by schedule and occurrence. Exactly one node (or worker) wins it; the
others move on.

The claim is first a *lease* (``lease_s``: five ticks, at least a second, at
most half the grace). The winner prepares the run (the schedule, the sound, the
devices), then turns the lease into the long claim (``extend``: atomically,
only if it still holds it) and only then starts the announcement and moves the
cursor past the occurrence. So:

* a node that dies (or stalls) between the claim and the start holds the
  occurrence only for its lease; the cursor is still before it, and another
  node takes it at a scan after the lease ran out — within the grace it runs
  there, after it it is recorded missed. The stalled node, waking, finds its
  lease gone and does nothing: never twice;
* the store failing while the run is prepared: the winner tries again each
  tick; when the store is back it runs it if it still holds the lease (else
  another node, or the next scan, has it), and past the grace it is missed;
* a node that stops before the start gives the claim back at once (and takes
  no new claims while stopping);
* once the announcement was handed to the announcer the claim is never given
  back: an announcement that started is never started again. A node dying in
  that one step loses that occurrence (at most once).

An occurrence is due ``lead_s`` before its instant (the announcer then starts
it at about that instant). One that could not start within ``grace_s`` of its
instant (every node was down, or the store was) is not played late: the node
that claims it records it as missed (one record for the occurrences one scan
found missed). A run's result (targeted/started/offline/refused) and each miss
go into the schedule's recent runs and, through ``report``, the audit log.

A handled occurrence's claim outlives its grace by an hour (``CLAIM_EXTRA_S``),
so no node can win it again while it could still be played; by then the cursor
is past it. Claims thus number about (grace + an hour) / period per schedule.

Work per scan is bounded: a schedule whose next occurrence is known and not due
costs a comparison (``_next``, rebuilt from the stored schedules on each scan);
a long outage's occurrences are worked off ``MAX_SCAN`` per schedule and scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from comms.log_sampling import SampledLog
from server.announce.announcer import Announcer
from server.announce.schedule import FAILED, MISSED, RAN, Run, Schedule, ScheduleStore
from server.audio.tenant_sounds import SoundChoice, SoundRejected, TenantSounds
from server.errors import StoreUnavailable, describe
from server.fleet.labels import BadLabel, DeviceLabels, parse_selector
from server.fleet.node import Fleet
from server.supervision import TaskOwner

log = logging.getLogger(__name__)
_scan_failures = SampledLog()  # a broken schedule fails every tick: a few lines, not one a second
_outages = SampledLog()  # the store down: every tick fails alike

CLAIM_EXTRA_S = 3600.0  # a claim is held this long past the grace (more than the lead plus a tick)
YIELD_COMPUTED = 20  # schedules whose crons a scan computes (~0.2 ms each) before it lets others run
YIELD_SCHEDULES = 500  # schedules a scan looks at, at most, between two such pauses
MAX_SCAN = 1000  # occurrences one scan of a schedule looks at (a long outage is worked off over ticks)
RELEASE_TIMEOUT_S = 1.0  # giving a claim back on the way out: no longer
LEASE_MIN_S = 1.0  # a run's claim until its start (the lease): at least this, ...
LEASE_TICKS = 5  # ... and at least this many ticks, at most half the grace


@dataclass(frozen=True)
class _Prepared:
    """A run ready to start: the schedule as it is now, its sound and its targets."""

    schedule: Schedule
    choice: SoundChoice
    devices: list[str]


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
        self._closing = False
        self.claim_s = grace_s + CLAIM_EXTRA_S  # an occurrence handled: nobody takes it again
        self.lease_s = min(grace_s / 2, max(LEASE_MIN_S, LEASE_TICKS * tick_s))  # until its start
        self._next: dict[str, tuple[Schedule, float, float]] = {}  # key: (schedule, since, next occurrence)
        self.ticks = 0  # scans done (tests wait on it)
        self.computed = 0  # schedules whose occurrences a scan computed (tests: the rest were known)

    @property
    def node(self) -> str:
        return self._fleet.node_id

    async def close(self) -> None:
        """Stop running: no more claims (the loop itself may tick until the server's loops stop, which
        is later), and runs in flight that did not start give their claims back."""
        self._closing = True
        await self._runs.close()

    async def run(self) -> None:
        """The loop (supervised by the server: a tick that raises is logged and the loop restarted)."""
        while True:
            try:
                await self.tick()
            except StoreUnavailable:  # due runs wait for the store, up to the grace; then they are missed
                held_back = _outages.admit("tick")
                if held_back is not None:
                    log.warning("schedule.store_unavailable", extra={"suppressed": held_back})
            await asyncio.sleep(self.tick_s)

    async def tick(self) -> None:
        now = time.time()
        schedules = await self.store.all()
        cursors = await self.store.cursors()
        self._next = {s.key: self._next[s.key] for s in schedules if s.key in self._next}
        yielded = self.computed
        for index, schedule in enumerate(schedules):
            if self.computed - yielded >= YIELD_COMPUTED or index % YIELD_SCHEDULES == YIELD_SCHEDULES - 1:
                yielded = self.computed
                await asyncio.sleep(0)  # the node's sessions go on meanwhile: a cold scan of 10k is seconds
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
        horizon = now + self._announcer.lead_s
        known = self._next.get(schedule.key)
        if known is not None and known[0] == schedule and known[1] == since and known[2] > horizon:
            return  # nothing due yet, as the last scan found: no cron to compute
        self.computed += 1
        due, following = schedule.timing.due(since, MAX_SCAN, until=horizon)
        if not due:
            if following is None:  # none seen past the horizon: ask once more how far the next is
                following = next(iter(schedule.timing.after(since, 1)), math.inf)
            self._next[schedule.key] = (schedule, since, following)
            return
        self._next.pop(schedule.key, None)
        ttl = self.claim_s
        missed = [t for t in due if now - t > self.grace_s]
        won: list[float] = []
        try:
            for occurrence in missed:
                if await self.store.claim(schedule, occurrence, self.node, ttl):
                    won.append(occurrence)
        finally:  # the store failing midway: what was won is still recorded (its claims are taken)
            if won:
                await self._missed(schedule, won)
        for occurrence in due[len(missed) :]:  # the cursor passes these once their runner started them
            if self._closing:  # stopping: leave them to the other nodes
                break
            if await self.store.claim(schedule, occurrence, self.node, self.lease_s):
                if self._closing:  # closed while claiming: no run could start here
                    await self._give_back(schedule, occurrence)
                    break
                self._runs.spawn(self._perform(schedule, occurrence), f"run:{schedule.id}")
        if missed:
            await self.store.advance(schedule, missed[-1])

    async def _missed(self, schedule: Schedule, won: list[float]) -> None:
        run = Run(won[-1], MISSED, self.node, missed=len(won), message=self._missed_text(won))
        log.warning(
            "schedule.missed",
            extra={"schedule": schedule.id, "tenant": schedule.tenant, "occurrences": len(won)},
        )
        await self._finish(schedule, run)

    def _missed_text(self, won: list[float]) -> str:
        many = f"{len(won)} occurrences" if len(won) > 1 else "the occurrence"
        return f"{many} could not start within the grace of {self.grace_s:g} s"

    async def _perform(self, schedule: Schedule, occurrence: float) -> None:
        handed = False  # the announcer has it: from here on the claim is never given back
        try:
            prepared = await self._prepare_within_grace(schedule, occurrence)
            if prepared is None:  # the lease ran out before the start: another node's (or the next scan's)
                log.warning("schedule.lease_lost", extra={"schedule": schedule.id, "occurrence": occurrence})
                return
            if isinstance(prepared, Run):
                run = prepared
            else:
                handed = True
                run = await self._start(prepared, occurrence)
        except asyncio.CancelledError:
            if not handed:  # stopping before the start: another node may still run it in time
                await self._give_back(schedule, occurrence)
            raise
        except Exception as exc:
            log.exception("schedule.run_failed", extra={"schedule": schedule.id, "tenant": schedule.tenant})
            # the library's text (addresses, say) stays in the log
            words = f"the run failed on node {self.node} ({type(exc).__name__}; its log has the details)"
            run = Run(occurrence, FAILED, self.node, message=words[:200])
        try:
            await self.store.advance(schedule, occurrence)
        except StoreUnavailable:  # its claim is held past the grace: nobody runs it again
            log.warning("schedule.advance_failed", extra={"schedule": schedule.id, "occurrence": occurrence})
        await self._finish(schedule, run)

    async def _give_back(self, schedule: Schedule, occurrence: float) -> None:
        with contextlib.suppress(Exception):  # the store down too: the claim stays (at most once)
            async with asyncio.timeout(RELEASE_TIMEOUT_S):
                await self.store.release(schedule, occurrence, self.node)
                log.info("schedule.claim_released", extra={"schedule": schedule.id, "occurrence": occurrence})

    async def _prepare_within_grace(self, schedule: Schedule, occurrence: float) -> _Prepared | Run | None:
        """The run ready to start, or its result without a start; None when the lease was lost.

        The store failing is tried again each tick while the grace lasts, then the occurrence is
        missed. Before it starts (or is recorded), the lease is made the long claim, atomically and
        only if this node still holds it: a node slower than its lease (stalled, or the store down
        that long) finds another has taken over, or the next scan will, and does nothing."""
        while True:
            try:
                prepared = await self._prepare(schedule, occurrence)
                if not isinstance(prepared, Run) and time.time() - occurrence > self.grace_s:
                    prepared = self._missed_run(schedule, occurrence)  # never played late
                if not await self.store.extend(schedule, occurrence, self.node, self.claim_s):
                    return None
                return prepared
            except StoreUnavailable:
                pass
            if time.time() - occurrence > self.grace_s:  # the store still down: the log has the miss
                return self._missed_run(schedule, occurrence)
            await asyncio.sleep(self.tick_s)

    def _missed_run(self, schedule: Schedule, occurrence: float) -> Run:
        log.warning(
            "schedule.missed", extra={"schedule": schedule.id, "tenant": schedule.tenant, "occurrences": 1}
        )
        return Run(occurrence, MISSED, self.node, missed=1, message=self._missed_text([occurrence]))

    async def _prepare(self, schedule: Schedule, occurrence: float) -> _Prepared | Run:
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
        return _Prepared(current, choice, devices)

    async def _start(self, prepared: _Prepared, occurrence: float) -> Run:
        current = prepared.schedule
        announcement, outcome = await self._announcer.announce(
            current.tenant, prepared.devices, prepared.choice, current.priority, current.resume
        )
        return Run(
            occurrence,
            RAN,
            self.node,
            announcement=announcement.id,
            targeted=len(prepared.devices),
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
