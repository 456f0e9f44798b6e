"""FleetService's calls for announcement schedules (issue 21): create, list, show, pause, resume, delete.

A mixin of ``FleetAdmin`` (api.py), scoped, role-checked and audited like
``Announce``: writes need ``operator``, reads ``viewer``; a schedule of another
tenant is NOT_FOUND like one that does not exist. Every refusal of a bad
schedule is INVALID_ARGUMENT in our own words and stores nothing. The runner
is in ``server.announce.scheduler``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TypeVar

import grpc

from comms.gen import admin_pb2 as apb
from server.access.interceptor import OperatorCall
from server.announce.plan import MAX_PRIORITY
from server.announce.schedule import (
    Run,
    Schedule,
    ScheduleError,
    ScheduleStore,
    new_schedule,
    parse_timing,
    valid_id,
)
from server.audio.tenant_sounds import SoundRejected, TenantSounds
from server.fleet.labels import BadLabel, parse_selector
from server.operator.calls import ApiError, Note, OperatorCalls, not_found

T = TypeVar("T")
NEXT_RUNS = 5
AUDIT_TEXT = 108
NO_SOUND_TEXT = "choose the sound: a mode or the name of an uploaded sound"


def run_proto(run: Run) -> apb.ScheduleRun:
    return apb.ScheduleRun(
        occurrence_unix=run.occurrence,
        ran_unix=run.at,
        result=run.result,
        node=run.node,
        announcement_id=run.announcement,
        targeted=run.targeted,
        started=run.started,
        offline=run.offline,
        refused=run.refused,
        missed=run.missed,
        message=run.message,
    )


class ScheduleCalls:
    """Schedules for ``FleetAdmin``."""

    schedules: ScheduleStore
    schedule_cap: int
    calls: OperatorCalls
    sounds: TenantSounds

    def _one_tenant(self, call: OperatorCall, requested: str, note: Note) -> str:
        raise NotImplementedError  # FleetAdmin's

    async def _guarded(self, work: Awaitable[T]) -> T:
        raise NotImplementedError  # FleetAdmin's

    async def schedule_proto(self, schedule: Schedule, runs: bool = True) -> apb.Schedule:
        now = time.time()
        cursor = await self._guarded(self.schedules.cursor(schedule))
        message = apb.Schedule(
            id=schedule.id,
            tenant=schedule.tenant,
            selector=schedule.selector,
            sound=schedule.sound_label,
            at=schedule.at_text,
            cron=schedule.timing.cron,
            time_zone=schedule.timing.zone,
            priority=schedule.priority,
            no_resume=not schedule.resume,
            state=schedule.state(cursor, now),
            next_runs_unix=schedule.next_runs(cursor, now, NEXT_RUNS),
            created_by=schedule.created_by,
            created_unix=schedule.created_at,
            sound_name=schedule.sound_name,
        )
        if schedule.mode is not None:
            message.mode = schedule.mode
        if runs:
            message.recent_runs.extend(
                run_proto(r) for r in await self._guarded(self.schedules.runs(schedule))
            )
        return message

    async def _schedule(self, call: OperatorCall, ref: apb.ScheduleRef, note: Note) -> Schedule:
        tenant = self._one_tenant(call, ref.tenant, note)
        note.target = ref.id[:AUDIT_TEXT]
        if not valid_id(ref.id):
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT, "a schedule id is 12 hex digits (schedules list)"
            )
        schedule = await self._guarded(self.schedules.get(tenant, ref.id))
        if schedule is None:
            raise not_found(f"schedule {ref.id}")
        return schedule

    # --- calls -------------------------------------------------------------------------------

    async def CreateSchedule(
        self, request: apb.CreateScheduleRequest, context: grpc.aio.ServicerContext
    ) -> apb.Schedule:
        async def work(call: OperatorCall, note: Note) -> apb.Schedule:
            tenant = self._one_tenant(call, request.tenant, note)
            note.target = request.selector[:AUDIT_TEXT]
            note.parameters.update(
                selector=request.selector[:AUDIT_TEXT],
                at=request.at[:AUDIT_TEXT],
                cron=request.cron[:AUDIT_TEXT],
                time_zone=request.time_zone[:AUDIT_TEXT],
                priority=request.priority,
                resume=not request.no_resume,
            )
            invalid = grpc.StatusCode.INVALID_ARGUMENT
            if request.priority > MAX_PRIORITY:
                raise ApiError(invalid, f"priority {request.priority} is outside 0..{MAX_PRIORITY}")
            try:
                selector = str(parse_selector(request.selector))
                timing = parse_timing(request.at, request.cron, request.time_zone, time.time())
            except (BadLabel, ScheduleError) as exc:
                raise ApiError(invalid, str(exc)) from None
            which = request.WhichOneof("sound")
            if which is None:
                raise ApiError(invalid, NO_SOUND_TEXT)
            mode = request.mode if which == "mode" else None
            name = request.sound_name if which == "sound_name" else ""
            note.parameters["sound"] = f"mode {mode}" if mode is not None else name[:AUDIT_TEXT]

            async def choose() -> str:
                try:
                    return (await self.sounds.choose(tenant, mode=mode, name=name)).label
                except (LookupError, SoundRejected) as exc:
                    raise ApiError(invalid, str(exc)) from None

            label = await self._guarded(choose())
            note.parameters["sound"] = label
            existing = await self._guarded(self.schedules.of_tenant(tenant))
            if len(existing) >= self.schedule_cap:
                raise ApiError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"tenant {tenant} has {len(existing)} schedules, the most allowed; delete one first",
                )
            schedule = new_schedule(
                tenant,
                selector=selector,
                mode=mode,
                sound_name=name,
                sound_label=label,
                timing=timing,
                at_text=request.at,
                priority=request.priority,
                resume=not request.no_resume,
                created_by=call.auth.spiffe_id if call.auth is not None else "",
            )
            await self._guarded(self.schedules.put(schedule))
            note.target = schedule.id
            note.parameters["schedule"] = schedule.id
            return await self.schedule_proto(schedule, runs=False)

        return await self.calls.run(context, "CreateSchedule", work, changes=True)

    async def ListSchedules(
        self, request: apb.ListSchedulesRequest, context: grpc.aio.ServicerContext
    ) -> apb.ListSchedulesResponse:
        async def work(call: OperatorCall, note: Note) -> apb.ListSchedulesResponse:
            tenant = self._one_tenant(call, request.tenant, note)
            found = await self._guarded(self.schedules.of_tenant(tenant))
            return apb.ListSchedulesResponse(schedules=[await self.schedule_proto(s) for s in found])

        return await self.calls.run(context, "ListSchedules", work, changes=False)

    async def GetSchedule(self, request: apb.ScheduleRef, context: grpc.aio.ServicerContext) -> apb.Schedule:
        async def work(call: OperatorCall, note: Note) -> apb.Schedule:
            return await self.schedule_proto(await self._schedule(call, request, note))

        return await self.calls.run(context, "GetSchedule", work, changes=False)

    async def _pause(
        self, request: apb.ScheduleRef, context: grpc.aio.ServicerContext, action: str, paused: bool
    ) -> apb.Schedule:
        async def work(call: OperatorCall, note: Note) -> apb.Schedule:
            schedule = await self._schedule(call, request, note)
            if schedule.paused != paused:
                schedule = await self._guarded(self.schedules.set_paused(schedule, paused))
            return await self.schedule_proto(schedule)

        return await self.calls.run(context, action, work, changes=True)

    async def PauseSchedule(
        self, request: apb.ScheduleRef, context: grpc.aio.ServicerContext
    ) -> apb.Schedule:
        return await self._pause(request, context, "PauseSchedule", True)

    async def ResumeSchedule(
        self, request: apb.ScheduleRef, context: grpc.aio.ServicerContext
    ) -> apb.Schedule:
        return await self._pause(request, context, "ResumeSchedule", False)

    async def DeleteSchedule(
        self, request: apb.ScheduleRef, context: grpc.aio.ServicerContext
    ) -> apb.Schedule:
        async def work(call: OperatorCall, note: Note) -> apb.Schedule:
            schedule = await self._schedule(call, request, note)
            shown = await self.schedule_proto(schedule)
            await self._guarded(self.schedules.delete(schedule))
            shown.state = "deleted"
            del shown.next_runs_unix[:]
            return shown

        return await self.calls.run(context, "DeleteSchedule", work, changes=True)
