"""Announcement schedules (issue 21): real servers, real Redis, two replicas, real devices.

The next-run computation across Europe/Berlin's clock changes (the claims underneath are tested on
every backend in test_shared_data.py); create/list/show/pause/resume/delete through the API and the CLI;
refusals that store nothing; an occurrence running exactly once with two replicas, on the other
replica when one is stopped, and recorded missed when no node ran it within the grace; roles and
scope, audited.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import aiohttp
import grpc
import pytest
from pydantic import ValidationError

from admin import schedules as admin_schedules
from auth.operators import Role
from comms.gen import admin_pb2 as apb
from device.audio_sink import RecordingSink
from server.announce import schedule as schedule_module
from server.announce.plan import Announcement, Outcome
from server.announce.schedule import (
    MISSED,
    RAN,
    Run,
    Schedule,
    ScheduleError,
    ScheduleStore,
    Timing,
    new_schedule,
    parse_timing,
)
from server.announce.scheduler import Scheduler
from server.app import AudioServer
from server.audio.tenant_sounds import SoundChoice
from server.errors import StoreUnavailable
from server.operator.console.schedules import present_schedule
from server.state.shared_data import GuardedData, MemoryData, SharedData
from tests.conftest import Admin, Connect, ServerFactory, make_settings
from tests.helpers import EphemeralPki, wait_for
from tests.redis_server import RedisServer
from tests.test_admin_api import refused
from tests.test_admin_cli import cli, provision
from tests.test_admin_replicas import shared
from tests.test_announce import CHIRP, clip_pcm, labelled, online, sounds_like
from tests.test_console import _csrf, login_link
from tests.test_operator_robustness import audit_events

BERLIN = ZoneInfo("Europe/Berlin")
FAST = {"schedule_tick_s": 0.05, "schedule_grace_s": 5.0}
INVALID = grpc.StatusCode.INVALID_ARGUMENT
FIELDS = "minute hour day-of-month month day-of-week"
STANDARD = "numbers, *, lists a,b, ranges a-b, steps /n; names in month and day-of-week"


def berlin(*fields: int) -> float:
    return datetime(*fields, tzinfo=BERLIN).timestamp()  # type: ignore[misc]


def shown(instants: list[float]) -> list[str]:
    return [datetime.fromtimestamp(t, BERLIN).isoformat() for t in instants]


def soon(seconds: float, zone: str = "UTC") -> tuple[str, float]:
    """A local time ``seconds`` ahead (whole seconds, as an operator types it) and its instant."""
    at = math.ceil(time.time() + seconds)
    return datetime.fromtimestamp(at, ZoneInfo(zone)).replace(tzinfo=None).isoformat(), float(at)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Poll ``check`` (async) until it returns something truthy; that."""
    deadline = time.monotonic() + timeout
    while not (found := await check()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
    return found


def create(selector: str = "zone=kitchen", **fields: Any) -> apb.CreateScheduleRequest:
    values: dict[str, Any] = {"selector": selector, **fields}
    if "sound_name" not in values:
        values.setdefault("mode", CHIRP)
    return apb.CreateScheduleRequest(**values)


async def runs_of(ops: Any, schedule_id: str, count: int = 1) -> list[apb.ScheduleRun]:
    async def check() -> list[apb.ScheduleRun] | None:
        got = await ops.GetSchedule(apb.ScheduleRef(id=schedule_id))
        return list(got.recent_runs) if len(got.recent_runs) >= count else None

    found: list[apb.ScheduleRun] = await eventually(check)
    return found


async def ticked_twice(*apps: AudioServer) -> None:
    """Every node scanned twice more from now: a second run, if any node were to make one, is started."""
    marks = [app.scheduler.ticks for app in apps]
    await wait_for(
        lambda: all(app.scheduler.ticks >= mark + 2 for app, mark in zip(apps, marks, strict=True))
    )


# --- next runs across clock changes (Europe/Berlin) --------------------------------------------


def test_a_time_the_spring_clock_change_skips_runs_at_the_first_valid_instant_after_it() -> None:
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that night
    timing = Timing("Europe/Berlin", cron="30 2 * * *")
    runs = timing.after(berlin(2026, 3, 28, 12), 3)
    assert shown(runs) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    every_20 = Timing("Europe/Berlin", cron="*/20 2 * * *").after(berlin(2026, 3, 28, 12), 3)
    assert shown(every_20)[:2] == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"]  # once, not 3x
    with_three = Timing("Europe/Berlin", cron="30 2,3 * * *").after(berlin(2026, 3, 28, 12), 3)
    assert shown(with_three) == [
        "2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00"
    ]  # fmt: skip
    one_shot = parse_timing("2026-03-29T02:30", "", "Europe/Berlin", berlin(2026, 3, 1))
    assert shown([one_shot.at or 0.0]) == ["2026-03-29T03:00:00+02:00"]


def test_a_time_the_autumn_clock_change_repeats_runs_once_at_its_first_occurrence() -> None:
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice
    timing = Timing("Europe/Berlin", cron="30 2 * * *")
    runs = timing.after(berlin(2026, 10, 24, 12), 3)
    assert shown(runs) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]
    second_pass = datetime(
        2026, 10, 25, 2, 10, tzinfo=BERLIN, fold=1
    ).timestamp()  # 02:10 CET, after the first
    assert shown(timing.after(second_pass, 1)) == [
        "2026-10-26T02:30:00+01:00"
    ]  # not a second 02:30 that night
    hourly = Timing("Europe/Berlin", cron="0 * * * *").after(berlin(2026, 10, 25, 0, 30), 4)
    assert shown(hourly) == [
        "2026-10-25T01:00:00+02:00", "2026-10-25T02:00:00+02:00", "2026-10-25T03:00:00+01:00",
        "2026-10-25T04:00:00+01:00",
    ]  # each wall-clock time once, like cron  # fmt: skip
    one_shot = parse_timing("2026-10-25T02:30", "", "Europe/Berlin", berlin(2026, 10, 1))
    assert shown([one_shot.at or 0.0]) == ["2026-10-25T02:30:00+02:00"]


def test_weekday_mornings_in_berlin_keep_their_local_time_across_the_change() -> None:
    runs = Timing("Europe/Berlin", cron="0 9 * * 1-5").after(berlin(2026, 10, 23, 10), 3)
    assert shown(runs) == [
        "2026-10-26T09:00:00+01:00",
        "2026-10-27T09:00:00+01:00",
        "2026-10-28T09:00:00+01:00",
    ]


@pytest.mark.parametrize(
    ("at", "cron", "zone", "message"),
    [
        ("", "0 0 30 2 *", "UTC", "the cron expression '0 0 30 2 *' never fires"),
        ("", "61 * * * *", "UTC", f"'61 * * * *' is not a valid cron expression ({FIELDS})"),
        ("", "0 9 * *", "UTC", f"a cron expression has five fields ({FIELDS}); '0 9 * *' has 4"),
        ("", "@daily", "UTC", f"a cron expression has five fields ({FIELDS}); '@daily' has 1"),
        ("2020-01-01T09:00", "", "UTC", "at 2020-01-01T09:00 (UTC) is in the past; it is 2026-06-01T00:00:00 "
         "there now"),
        ("tomorrow", "", "UTC", "at 'tomorrow' is not a time like 2026-12-03T09:00"),
        ("", "0 9 * * *", "Mars/Olympus", "unknown time zone 'Mars/Olympus' (use an IANA name like "
         "Europe/Berlin)"),
        ("2027-01-01T09:00", "0 9 * * *", "UTC", "give the time as one instant (at) or a cron expression, "
         "not both"),
        ("", "", "UTC", "give the time: one instant (at) or a cron expression"),
        ("", "R 9 * * *", "UTC", f"the minute field 'R' is not standard cron ({STANDARD})"),
        ("", "H 9 * * *", "UTC", f"the minute field 'H' is not standard cron ({STANDARD})"),
        ("", "0 9 L * *", "UTC", f"the day-of-month field 'L' is not standard cron ({STANDARD})"),
        ("", "0 9 ? * *", "UTC", f"the day-of-month field '?' is not standard cron ({STANDARD})"),
        ("", "0 9 * * 5#3", "UTC", f"the day-of-week field '5#3' is not standard cron ({STANDARD})"),
        ("", "0 0 9 * * *", "UTC", f"a cron expression has five fields ({FIELDS}); '0 0 9 * * *' has 6"),
        ("", "0 9 * * *", "localtime", "'localtime' is each server's own zone; name the zone (like "
         "Europe/Berlin)"),
        ("", "0 9 * * *", "right/UTC", "unknown time zone 'right/UTC' (use an IANA name like Europe/Berlin)"),
        ("", "0 9 * * *", "posixrules", "unknown time zone 'posixrules' (use an IANA name like "
         "Europe/Berlin)"),
    ],
    ids=["never fires", "bad field", "four fields", "nickname", "past", "not a time", "zone", "both",
         "neither", "random", "hashed", "last day", "question mark", "nth weekday", "six fields", "localtime",
         "leap seconds", "posixrules"],
)  # fmt: skip
def test_bad_timings_are_refused_in_our_words(at: str, cron: str, zone: str, message: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_timing(at, cron, zone, datetime(2026, 6, 1, tzinfo=ZoneInfo("UTC")).timestamp())
    assert str(info.value) == message


def test_a_cron_with_both_days_runs_on_either_like_cron() -> None:
    """Day of month and day of week both given: cron's OR rule (the 13th, and every Friday)."""
    timing = parse_timing("", "0 9 13 * fri", "Europe/Berlin", berlin(2026, 11, 1))
    assert shown(timing.after(berlin(2026, 11, 1), 5)) == [
        "2026-11-06T09:00:00+01:00",
        "2026-11-13T09:00:00+01:00",
        "2026-11-20T09:00:00+01:00",
        "2026-11-27T09:00:00+01:00",
        "2026-12-04T09:00:00+01:00",
    ]
    monday_13th = parse_timing("", "0 9 13 * 1", "Europe/Berlin", berlin(2026, 4, 1))
    assert shown(monday_13th.after(berlin(2026, 4, 1), 3)) == [
        "2026-04-06T09:00:00+02:00",
        "2026-04-13T09:00:00+02:00",
        "2026-04-20T09:00:00+02:00",
    ]


def test_an_at_with_an_offset_is_that_instant_and_one_without_is_local_in_the_zone() -> None:
    now = berlin(2026, 11, 1)
    with_offset = parse_timing("2026-12-03T09:00+00:00", "", "Europe/Berlin", now)
    assert with_offset.at == datetime(2026, 12, 3, 9, tzinfo=ZoneInfo("UTC")).timestamp()
    assert shown([with_offset.at or 0.0]) == ["2026-12-03T10:00:00+01:00"]
    local = parse_timing("2026-12-03T09:00", "", "Europe/Berlin", now)
    assert shown([local.at or 0.0]) == ["2026-12-03T09:00:00+01:00"]


# --- the calls -----------------------------------------------------------------------------------


async def test_create_list_show_pause_resume_and_delete(server_factory: ServerFactory, admin: Admin) -> None:
    server = await server_factory(**FAST)
    async with admin(server, role="operator") as ops, admin(server, role="viewer") as viewer:
        made = await ops.CreateSchedule(create(cron="0 9 * * 1-5", time_zone="Europe/Berlin", priority=3))
        assert (made.state, made.selector, made.sound, made.cron, made.time_zone) == (
            "active", "zone=kitchen", "mode 2 (built-in)", "0 9 * * 1-5", "Europe/Berlin"
        )  # fmt: skip
        assert len(made.next_runs_unix) == 5
        for run in made.next_runs_unix:
            local = datetime.fromtimestamp(run, BERLIN)
            assert (local.hour, local.minute) == (9, 0) and local.weekday() < 5 and run > time.time()
        assert made.created_by.endswith("/operator/ops") and made.priority == 3 and not made.no_resume
        listed = (await viewer.ListSchedules(apb.ListSchedulesRequest())).schedules
        assert [s.id for s in listed] == [made.id]
        shown_ = await viewer.GetSchedule(apb.ScheduleRef(id=made.id))
        assert list(shown_.next_runs_unix) == list(made.next_runs_unix)
        paused = await ops.PauseSchedule(apb.ScheduleRef(id=made.id))
        assert (paused.state, list(paused.next_runs_unix)) == ("paused", [])
        resumed = await ops.ResumeSchedule(apb.ScheduleRef(id=made.id))
        assert resumed.state == "active" and list(resumed.next_runs_unix) == list(made.next_runs_unix)
        deleted = await ops.DeleteSchedule(apb.ScheduleRef(id=made.id))
        assert deleted.state == "deleted"
        assert not (await viewer.ListSchedules(apb.ListSchedulesRequest())).schedules
        gone = await refused(viewer.GetSchedule(apb.ScheduleRef(id=made.id)))
        assert (gone.code(), gone.details()) == (grpc.StatusCode.NOT_FOUND, f"schedule {made.id} not found")
    actions = [e.action for e in reversed(await audit_events(server)) if e.result == "OK"]
    assert actions == ["CreateSchedule", "PauseSchedule", "ResumeSchedule", "DeleteSchedule"]


async def test_a_selector_that_matches_nothing_at_run_time_is_a_run_with_0_targets(
    server_factory: ServerFactory, admin: Admin
) -> None:
    server = await server_factory(**FAST)
    async with admin(server, role="operator") as ops:
        at, instant = soon(1.5)
        made = await ops.CreateSchedule(create("zone=garage", at=at))
        assert list(made.next_runs_unix) == [instant]
        (run,) = await runs_of(ops, made.id)
        assert (run.result, run.targeted, run.started, run.occurrence_unix) == ("ran", 0, 0, instant)
        assert (await ops.GetSchedule(apb.ScheduleRef(id=made.id))).state == "done"
    (event,) = [e for e in await audit_events(server) if e.action == "ScheduleRun"]
    assert (event.result, event.target, event.parameters["targeted"]) == ("OK", made.id, 0)
    assert event.role == "schedule" and event.operator.endswith("/operator/ops")


async def test_an_unreadable_schedule_stops_no_other(server_factory: ServerFactory, admin: Admin) -> None:
    server = await server_factory(**FAST)
    store = server.scheduler.store
    async with admin(server, role="operator") as ops:
        broken = await ops.CreateSchedule(create(cron="0 9 * * *", time_zone="Europe/Berlin"))
        stored = await store.get("acme", broken.id)
        assert stored is not None
        gone_zone = stored.encode().replace("Europe/Berlin", "Europe/Atlantis")  # as if tzdata lost it
        await store._data.set_entry("schedules", stored.key, gone_zone)
        await store._data.set_entry("schedules", "acme/0123456789ab", "{not json")
        at, instant = soon(1.5)
        fine = await ops.CreateSchedule(create("zone=garage", at=at))
        (run,) = await runs_of(ops, fine.id)
        assert (run.result, run.occurrence_unix) == ("ran", instant)
        listed = {s.id: s for s in (await ops.ListSchedules(apb.ListSchedulesRequest())).schedules}
        assert set(listed) == {broken.id, fine.id}  # the unreadable entry is left out
        assert list(listed[broken.id].next_runs_unix) == []


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (create(cron="0 0 30 2 *"), "the cron expression '0 0 30 2 *' never fires"),
        (create(cron="0 25 * * *"), "'0 25 * * *' is not a valid cron expression (minute hour day-of-month "
         "month day-of-week)"),
        (create(at="2001-01-01T09:00"), None),  # in the past (the text names the time now)
        (create(cron="0 9 * * *", time_zone="Europe/Nowhere"), "unknown time zone 'Europe/Nowhere' (use an "
         "IANA name like Europe/Berlin)"),
        (create("zone", cron="0 9 * * *"), "'zone' is not key=value"),
        (create(sound_name="nope", cron="0 9 * * *"), "no uploaded sound is named 'nope' (uploads: "
         "none yet)"),
        (create(mode=99, cron="0 9 * * *"), None),
        (create(cron="0 9 * * *", at="2027-01-01T09:00"), "give the time as one instant (at) or a cron "
         "expression, not both"),
        (create(), "give the time: one instant (at) or a cron expression"),
        (create(cron="0 9 * * *", priority=10), "priority 10 is outside 0..9"),
    ],
    ids=["never fires", "bad syntax", "past", "zone", "selector", "unknown sound", "unknown mode", "both",
         "neither", "priority"],
)  # fmt: skip
async def test_bad_schedules_are_refused_in_our_words_and_nothing_is_stored(
    server: AudioServer, admin: Admin, request_: apb.CreateScheduleRequest, message: str | None
) -> None:
    async with admin(server, role="operator") as ops:
        error = await refused(ops.CreateSchedule(request_))
        assert error.code() == INVALID, error.details()
        if message is not None:
            assert error.details() == message
        assert "Traceback" not in error.details() and len(error.details()) < 300
        assert not (await ops.ListSchedules(apb.ListSchedulesRequest())).schedules
    (event,) = [e for e in await audit_events(server) if e.action == "CreateSchedule"]
    assert event.result == "INVALID_ARGUMENT"


async def test_a_tenant_keeps_at_most_its_cap_of_schedules(
    server_factory: ServerFactory, admin: Admin
) -> None:
    server = await server_factory(schedule_max_per_tenant=2)
    async with admin(server, role="operator") as ops, admin(server, "globex", role="operator") as globex:
        for _ in range(2):
            await ops.CreateSchedule(create(cron="0 9 * * *"))
        error = await refused(ops.CreateSchedule(create(cron="0 9 * * *")))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.details() == "tenant acme has 2 schedules, the most allowed; delete one first"
        await globex.CreateSchedule(create(cron="0 9 * * *"))  # per tenant
        assert len((await ops.ListSchedules(apb.ListSchedulesRequest())).schedules) == 2


@pytest.mark.parametrize(
    ("who", "call", "code"),
    [
        (("acme", "viewer"), "create", grpc.StatusCode.PERMISSION_DENIED),
        (("acme", "viewer"), "pause", grpc.StatusCode.PERMISSION_DENIED),
        (("acme", "viewer"), "delete", grpc.StatusCode.PERMISSION_DENIED),
        (("acme", "operator"), "get globex's", grpc.StatusCode.NOT_FOUND),
        (("acme", "operator"), "delete globex's", grpc.StatusCode.NOT_FOUND),
        (("acme", "operator"), "create for globex", grpc.StatusCode.NOT_FOUND),
        ((None, "operator"), "create", grpc.StatusCode.INVALID_ARGUMENT),
    ],
    ids=["viewer creates", "viewer pauses", "viewer deletes", "other tenant's get", "other tenant's delete",
         "create for another tenant", "platform without tenant"],
)  # fmt: skip
async def test_role_and_scope_refusals_change_nothing_and_are_audited(
    server: AudioServer, admin: Admin, who: tuple[str | None, str], call: str, code: grpc.StatusCode
) -> None:
    async with admin(server, "globex", role="operator") as globex:
        theirs = await globex.CreateSchedule(create(cron="0 9 * * *"))
    tenant, role = who
    ref = apb.ScheduleRef(id=theirs.id)
    async with admin(server, tenant, role=role, name="caller") as ops:
        request = {
            "create": lambda: ops.CreateSchedule(create(cron="0 9 * * *")),
            "pause": lambda: ops.PauseSchedule(ref),
            "delete": lambda: ops.DeleteSchedule(ref),
            "get globex's": lambda: ops.GetSchedule(ref),
            "delete globex's": lambda: ops.DeleteSchedule(ref),
            "create for globex": lambda: ops.CreateSchedule(create(tenant="globex", cron="0 9 * * *")),
        }[call]
        error = await refused(request())
        assert error.code() == code
    async with admin(server, "globex", role="viewer") as viewer:
        (still,) = (await viewer.ListSchedules(apb.ListSchedulesRequest())).schedules
        assert (still.id, still.state) == (theirs.id, "active")
    events = (await server.audit.list(None, 100))[0]
    mine = [e for e in events if e.operator.endswith("/operator/caller")]
    assert [e.result for e in mine] == [code.name]


# --- running: exactly once, across replicas ----------------------------------------------------


async def test_an_occurrence_runs_exactly_once_with_two_replicas(
    redis_server: RedisServer, server_factory: ServerFactory, connect: Connect, admin: Admin
) -> None:
    a = await server_factory(**shared(redis_server, "node-a"), **FAST)
    b = await server_factory(**shared(redis_server, "node-b"), **FAST)
    sinks = {name: RecordingSink() for name in ("kitchen-1", "kitchen-2", "hall-1")}
    async with (
        connect(a, "acme", "kitchen-1", sink=sinks["kitchen-1"]) as k1,
        connect(b, "acme", "kitchen-2", sink=sinks["kitchen-2"]) as k2,
        connect(a, "acme", "hall-1", sink=sinks["hall-1"]) as hall,
        admin(a, role="operator") as ops,
    ):
        for node, device, name in ((a, k1, "kitchen-1"), (b, k2, "kitchen-2"), (a, hall, "hall-1")):
            await online(node, device, "acme", name)
        for name in ("kitchen-1", "kitchen-2"):
            await ops.SetLabels(labelled(name, zone="kitchen"))
        at, instant = soon(2, "Europe/Berlin")
        made = await ops.CreateSchedule(create(at=at, time_zone="Europe/Berlin"))
        assert list(made.next_runs_unix) == [instant]
        (run,) = await runs_of(ops, made.id)
        assert (run.result, run.targeted, run.started, run.offline, run.refused) == ("ran", 2, 2, 0, 0)
        assert run.occurrence_unix == instant and run.node in ("node-a", "node-b")
        heard = [sinks["kitchen-1"], sinks["kitchen-2"]]
        await wait_for(lambda: all(s.sounds and s.sounds[0].ended for s in heard), timeout=6)
        await ticked_twice(a, b)
        for sink in heard:
            assert len(sink.sounds) == 1  # each targeted device played exactly one sound
            assert sounds_like(sink.sounds[0].pcm, clip_pcm(a, CHIRP))
        assert not sinks["hall-1"].sounds
        done = await ops.GetSchedule(apb.ScheduleRef(id=made.id))
        assert (done.state, list(done.next_runs_unix), len(done.recent_runs)) == ("done", [], 1)
    runs = [e for e in await audit_events(a) if e.action == "ScheduleRun"]
    assert [(e.result, e.parameters["started"]) for e in runs] == [("OK", 2)]


async def test_the_other_replica_runs_the_occurrence_when_one_is_stopped_before_it(
    redis_server: RedisServer, server_factory: ServerFactory, connect: Connect, admin: Admin
) -> None:
    a = await server_factory(**shared(redis_server, "node-a"), **FAST)
    b = await server_factory(**shared(redis_server, "node-b"), **FAST)
    sink = RecordingSink()
    async with connect(b, "acme", "kitchen-2", sink=sink) as device, admin(b, role="operator") as ops:
        await online(b, device, "acme", "kitchen-2")
        await ops.SetLabels(labelled("kitchen-2", zone="kitchen"))
        async with admin(a, role="operator") as ops_a:
            at, instant = soon(2)
            made = await ops_a.CreateSchedule(create(at=at))
        await a.stop()  # node-a is gone before the occurrence: what it created lives in the store
        (run,) = await runs_of(ops, made.id)
        assert (run.result, run.node, run.started, run.occurrence_unix) == ("ran", "node-b", 1, instant)
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].ended, timeout=6)
        await ticked_twice(b)
        assert len(sink.sounds) == 1


async def test_an_occurrence_no_node_could_start_within_the_grace_is_recorded_missed_not_played(
    redis_server: RedisServer, server_factory: ServerFactory, connect: Connect, admin: Admin
) -> None:
    settings = {**FAST, "schedule_grace_s": 1.0}
    a = await server_factory(**shared(redis_server, "node-a"), **settings)
    async with admin(a, role="operator") as ops_a:
        at, instant = soon(2)
        made = await ops_a.CreateSchedule(create("all", at=at))
    await a.stop()  # no node runs while the occurrence and its grace pass
    await wait_for(lambda: time.time() > instant + 1.0 + 0.2, timeout=6)
    b = await server_factory(**shared(redis_server, "node-b"), **settings)
    sink = RecordingSink()
    async with connect(b, "acme", "kitchen-1", sink=sink) as device, admin(b, role="operator") as ops:
        await online(b, device, "acme", "kitchen-1")
        (run,) = await runs_of(ops, made.id)
        assert (run.result, run.node, run.missed, run.started, run.occurrence_unix) == (
            "missed", "node-b", 1, 0, instant
        )  # fmt: skip
        assert run.message == "the occurrence could not start within the grace of 1 s"
        await ticked_twice(b)
        assert not sink.sounds  # the late occurrence was never played
        assert (await ops.GetSchedule(apb.ScheduleRef(id=made.id))).state == "done"
    (event,) = [e for e in await audit_events(b) if e.action == "ScheduleRun"]
    assert (event.result, event.parameters["result"], event.parameters["missed"]) == (
        "DEADLINE_EXCEEDED", "missed", 1
    )  # fmt: skip


# --- the CLI -----------------------------------------------------------------------------------


async def test_the_cli_creates_lists_shows_pauses_resumes_and_deletes(
    server: AudioServer, pki: EphemeralPki
) -> None:
    provision(pki, "acme", "alice", Role.OPERATOR)
    code, out, err = await cli(
        server, pki, "schedules", "create", "--selector", "zone=kitchen", "--mode", "2",
        "--cron", "0 9 * * 1-5", "--tz", "Europe/Berlin", "--json",
    )  # fmt: skip
    assert code == 0, err
    made = json.loads(out)
    sid = made["id"]
    assert made["state"] == "active" and len(made["next_runs_unix"]) == 5
    code, out, err = await cli(server, pki, "schedules", "list")
    assert code == 0, err
    header, line = out.strip().splitlines()
    assert header.split()[:4] == ["ID", "STATE", "SELECTOR", "SOUND"]
    assert line.startswith(
        f"{sid}  active  zone=kitchen  mode 2 (built-in)  cron 0 9 * * 1-5 (Europe/Berlin)"
    )
    code, out, err = await cli(server, pki, "schedules", "show", sid)
    assert code == 0, err
    lines = out.splitlines()
    nexts = lines[lines.index("next runs:") + 1 : lines.index("recent runs:")]
    assert len(nexts) == 5 and all(n.strip().endswith(" 09:00 CET") for n in nexts), nexts
    assert lines[-1] == "  none yet"
    code, out, _ = await cli(server, pki, "schedules", "pause", sid)
    assert (code, out.strip()) == (0, f"paused schedule {sid}: no runs until it is resumed")
    code, out, _ = await cli(server, pki, "schedules", "resume", sid)
    assert code == 0 and out.startswith(f"resumed schedule {sid} (active); next run: ")
    code, out, _ = await cli(server, pki, "schedules", "delete", sid)
    assert (code, out.strip()) == (0, f"deleted schedule {sid}")
    code, out, _ = await cli(server, pki, "schedules", "list")
    assert (code, out.strip()) == (0, "no schedules")
    code, _, err = await cli(
        server, pki, "schedules", "create", "--selector", "all", "--mode", "0", "--cron", "0 0 30 2 *"
    )
    assert (code, err.strip()) == (1, "audio-admin: invalid: the cron expression '0 0 30 2 *' never fires")
    code, _, err = await cli(server, pki, "schedules", "show", "0123456789ab")
    assert (code, err.strip()) == (1, "audio-admin: not found: schedule 0123456789ab not found")


# --- the console page: roles, CSRF, tenants ------------------------------------------------------


async def test_roles_csrf_and_tenants_on_the_schedules_page(
    console: AudioServer, pki: EphemeralPki, admin: Admin, http: aiohttp.ClientSession
) -> None:
    async with admin(console, "globex", role="operator") as globex:
        theirs = await globex.CreateSchedule(create(cron="0 9 * * *"))
    async with admin(console, "acme", role="operator") as ops:
        ours = await ops.CreateSchedule(create(cron="0 9 * * *"))
    link = await login_link(console, pki, "acme", "viewer", "vic")
    base = link.split("/login/")[0]
    async with http.get(link, ssl=False) as signed:
        csrf = _csrf(await signed.text())
    async with http.get(f"{base}/schedules", ssl=False) as r:
        text = await r.text()
        assert r.status == 200 and ours.id in text and theirs.id not in text
        assert 'data-field="create"' not in text and f"Pause {ours.id}" not in text  # a viewer: no forms
    async with http.post(f"{base}/schedules/acme/{ours.id}/pause", data={"csrf": csrf}, ssl=False) as r:
        assert r.status == 403  # the role, for a hand-made POST
    async with http.post(f"{base}/schedules/acme/{ours.id}/delete", data={}, ssl=False) as r:
        assert r.status == 403  # no CSRF token
    async with http.get(f"{base}/schedules?tenant=globex", ssl=False) as r:
        assert r.status == 404 and theirs.id not in await r.text()
    async with admin(console, "acme", role="viewer") as viewer:
        (still,) = (await viewer.ListSchedules(apb.ListSchedulesRequest())).schedules
        assert still.state == "active"
    seen = [(e.action, e.result) for e in (await console.audit.list("acme", 50))[0]]
    assert ("PauseSchedule", "PERMISSION_DENIED") in seen
    assert (f"console:/schedules/acme/{ours.id}/delete", "PERMISSION_DENIED") in seen


def test_a_grace_shorter_than_two_ticks_is_refused_at_start(pki: EphemeralPki, tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        make_settings(pki, tmp_path, schedule_tick_s=10.0, schedule_grace_s=5.0)
    assert "schedule_grace_s must be at least twice schedule_tick_s" in str(info.value)


# --- the runner alone, its faults (a store that fails on demand, fakes around it) -----------------


class FlakyData(MemoryData):
    """A memory store whose chosen operations fail like a Redis outage (``down``: op names)."""

    def __init__(self) -> None:
        super().__init__()
        self.down: set[str] = set()

    def _check(self, op: str) -> None:
        if op in self.down or "all" in self.down:
            raise OSError("connection refused")

    async def entries(self, table: str) -> dict[str, str]:
        self._check("entries")
        return await super().entries(table)

    async def get_entry(self, table: str, key: str) -> str | None:
        self._check(f"get_entry:{table}")
        return await super().get_entry(table, key)

    async def set_entry(self, table: str, key: str, value: str | None) -> None:
        self._check("set_entry")
        await super().set_entry(table, key, value)

    async def claim(self, key: str, holder: str, ttl_s: float) -> bool:
        self._check("claim")
        return await super().claim(key, holder, ttl_s)


class FakeAnnouncer:
    lead_s = 0.05

    def __init__(self) -> None:
        self.started: list[str] = []

    async def announce(self, tenant: str, devices: list[str], sound: SoundChoice, priority: int, resume: bool
                       ) -> tuple[Announcement, Outcome]:  # fmt: skip
        self.started.append(tenant)
        return Announcement(f"a{len(self.started)}", tenant, sound, time.time()), Outcome(started=devices)


class FakeSounds:
    def __init__(self) -> None:
        self.hold = asyncio.Event()
        self.hold.set()
        self.asked = asyncio.Event()

    async def choose(self, tenant: str, mode: int | None, name: str) -> SoundChoice:
        self.asked.set()
        await self.hold.wait()
        return SoundChoice(tenant, mode or 0, label="mode 0 (built-in)")


class FakeFleet:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    async def devices(self, tenant: str, keep: Any) -> list[Any]:
        return []


class FakeLabels:
    async def of_tenant(self, tenant: str) -> dict[str, Any]:
        return {}


def runner(
    data: SharedData,
    node: str = "node-a",
    announcer: FakeAnnouncer | None = None,
    sounds: FakeSounds | None = None,
    grace_s: float = 5.0,
) -> tuple[Scheduler, list[Run]]:
    reported: list[Run] = []

    async def report(schedule: Schedule, run: Run) -> None:
        reported.append(run)

    scheduler = Scheduler(
        ScheduleStore(GuardedData(data)),
        cast(Any, FakeFleet(node)),
        cast(Any, FakeLabels()),
        cast(Any, sounds or FakeSounds()),
        cast(Any, announcer or FakeAnnouncer()),
        report,
        0.02,
        grace_s,
    )
    return scheduler, reported


async def one_shot(data: SharedData, in_s: float, tenant: str = "acme") -> Schedule:
    at = time.time() + in_s
    schedule = new_schedule(
        tenant, selector="all", mode=0, sound_name="", sound_label="mode 0", timing=Timing("UTC", at=at)
    )
    schedule = replace(schedule, since=min(schedule.since, at - 1))  # created a moment before it
    await ScheduleStore(GuardedData(data)).put(schedule)
    return schedule


async def test_the_loop_logs_a_store_outage_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    data = FlakyData()
    scheduler, _ = runner(data)
    data.down.add("all")
    loop = asyncio.create_task(scheduler.run())
    try:
        await wait_for(lambda: any(r.message == "schedule.store_unavailable" and r.levelno == logging.WARNING
                                   for r in caplog.records))  # fmt: skip
        assert scheduler.ticks == 0 and not loop.done()
        data.down.clear()
        await wait_for(lambda: scheduler.ticks >= 2)  # the same loop, going on once the store is back
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await scheduler.close()


async def test_a_run_whose_store_fails_before_its_start_is_tried_again_within_the_grace() -> None:
    data, announcer = FlakyData(), FakeAnnouncer()
    scheduler, reported = runner(data, announcer=announcer)
    await one_shot(data, 0.0)
    data.down.add("get_entry:schedules")  # the scan reads whole tables; the run's own read fails
    await scheduler.tick()  # claimed: this node's to run
    await asyncio.sleep(0.1)  # a few of the run's tries fail (what the test is about)
    assert not announcer.started and not reported
    data.down.clear()
    await wait_for(lambda: reported)
    assert [r.result for r in reported] == [RAN] and announcer.started == ["acme"]
    await scheduler.tick()
    await scheduler.close()
    assert len(announcer.started) == 1


async def test_a_run_the_store_keeps_from_starting_past_the_grace_is_missed_not_played() -> None:
    data, announcer = FlakyData(), FakeAnnouncer()
    scheduler, reported = runner(data, announcer=announcer, grace_s=0.2)
    await one_shot(data, 0.0)
    data.down.add("get_entry:schedules")
    await scheduler.tick()
    await wait_for(lambda: reported)
    data.down.clear()
    assert [(r.result, r.missed) for r in reported] == [(MISSED, 1)] and not announcer.started
    await scheduler.close()


async def test_a_run_stopped_before_its_start_gives_its_claim_to_another_node() -> None:
    data = FlakyData()
    held = FakeSounds()
    held.hold.clear()  # node a's run waits in its preparation
    a, a_reported = runner(data, "node-a", sounds=held)
    b_announcer = FakeAnnouncer()
    b, b_reported = runner(data, "node-b", announcer=b_announcer)
    await one_shot(data, 0.0)
    await a.tick()
    await asyncio.wait_for(held.asked.wait(), 5)
    await b.tick()  # a holds the claim: b moves on
    assert not b_announcer.started
    await a.close()  # a stops before the start: the claim goes back
    await b.tick()
    await wait_for(lambda: b_reported)
    assert [r.result for r in b_reported] == [RAN] and b_announcer.started == ["acme"] and not a_reported
    await b.close()


async def test_a_corrupt_cursor_stops_no_schedule() -> None:
    data, announcer = FlakyData(), FakeAnnouncer()
    scheduler, reported = runner(data, announcer=announcer)
    schedule = await one_shot(data, 0.0)
    await data.set_entry("schedule-cursor", schedule.key, "not a number")
    await scheduler.tick()
    await wait_for(lambda: reported)
    assert [r.result for r in reported] == [RAN]
    await scheduler.close()


async def test_a_scan_computes_only_the_schedules_that_changed_or_fell_due(monkeypatch: pytest.MonkeyPatch
                                                                          ) -> None:  # fmt: skip
    data = FlakyData()
    scheduler, _ = runner(data)
    store = ScheduleStore(GuardedData(data))
    for tenant in range(10):
        for _ in range(10):
            timing = parse_timing("", "0 9 * * 1-5", "Europe/Berlin", time.time())
            await store.put(new_schedule(f"t{tenant}", selector="all", mode=0, sound_name="",
                                         sound_label="mode 0", timing=timing))  # fmt: skip
    calls = 0
    real = schedule_module.cron_after

    def counted(*args: Any) -> list[float]:
        nonlocal calls
        calls += 1
        return real(*args)

    monkeypatch.setattr(schedule_module, "cron_after", counted)
    await scheduler.tick()
    first = calls
    assert first >= 100
    await scheduler.tick()
    await scheduler.tick()
    assert calls == first  # nothing changed, nothing due: no cron computed again
    changed = (await store.of_tenant("t0"))[0]
    await store.set_paused(await store.set_paused(changed, True), False)  # resumed: its start moved
    await scheduler.tick()
    assert 0 < calls - first <= 2
    await scheduler.close()


async def test_missed_occurrences_claimed_before_the_store_failed_are_still_recorded() -> None:
    data = FlakyData()
    scheduler, reported = runner(data, grace_s=0.1)
    store = ScheduleStore(GuardedData(data))
    timing = Timing("UTC", cron="* * * * *")
    schedule = new_schedule(
        "acme", selector="all", mode=0, sound_name="", sound_label="mode 0", timing=timing
    )
    schedule = replace(schedule, since=time.time() - 600)  # ten minutes of occurrences missed
    await store.put(schedule)
    taken = 0
    real = data.claim

    async def claim(key: str, holder: str, ttl_s: float) -> bool:
        nonlocal taken
        taken += 1
        if taken > 3:
            raise OSError("connection refused")
        return await real(key, holder, ttl_s)

    data.claim = claim  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await scheduler.tick()
    assert [(r.result, r.missed) for r in reported] == [(MISSED, 3)]
    await scheduler.close()


def test_the_page_shows_a_schedule_whose_zone_this_node_lacks_in_utc() -> None:
    gone = apb.Schedule(id="0123456789ab", time_zone="Gone/Nowhere", cron="0 9 * * *",
                        next_runs_unix=[datetime(2026, 12, 3, 9, tzinfo=ZoneInfo("UTC")).timestamp()],
                        recent_runs=[apb.ScheduleRun(occurrence_unix=0.0, result="ran")])  # fmt: skip
    shown = present_schedule(gone)
    assert shown["next"] == ["2026-12-03 09:00 UTC"] and shown["runs"][0]["due"] == "1970-01-01 00:00 UTC"


async def test_a_deleted_schedule_leaves_no_runs_behind() -> None:
    data = FlakyData()
    scheduler, reported = runner(data)
    schedule = await one_shot(data, 0.0)
    await scheduler.tick()
    await wait_for(lambda: reported)
    log = f"schedule-runs:{schedule.key}"
    assert len(await data.recent(log, 10, None)) == 1
    await scheduler.store.delete(schedule)
    assert await data.recent(log, 10, None) == []
    await scheduler.store.record(schedule, reported[0])  # a run ending after the delete
    assert await data.recent(log, 10, None) == []
    await scheduler.close()


def test_the_cli_shows_a_zone_its_machine_lacks_in_utc() -> None:
    nine = datetime(2026, 12, 3, 9, tzinfo=ZoneInfo("UTC")).timestamp()
    assert admin_schedules.local(nine, "Gone/Nowhere") == "2026-12-03 09:00 UTC"
    assert admin_schedules.local(nine, "Europe/Berlin", seconds=True) == "2026-12-03 10:00:00 CET"


async def test_a_closed_runner_claims_nothing_and_leaves_the_occurrence_to_another_node() -> None:
    """The server stops the runner before its loop (the loop may still tick meanwhile)."""
    data = FlakyData()
    a, a_reported = runner(data, "node-a")
    b_announcer = FakeAnnouncer()
    b, b_reported = runner(data, "node-b", announcer=b_announcer)
    await one_shot(data, 0.0)
    await a.close()
    await a.tick()  # a tick after the close: nothing claimed, the cursor left before it
    await b.tick()
    await wait_for(lambda: b_reported)
    assert [r.result for r in b_reported] == [RAN] and b_announcer.started == ["acme"] and not a_reported
    await b.close()


def test_a_one_shot_resumed_after_its_time_is_done_not_active_for_ever() -> None:
    at = time.time() - 60
    schedule = new_schedule("acme", selector="all", mode=0, sound_name="", sound_label="mode 0",
                            timing=Timing("UTC", at=at))  # fmt: skip
    paused = replace(schedule, paused=True, since=at - 60)
    assert paused.state(0.0, time.time()) == "paused"
    resumed = replace(paused, paused=False, since=time.time())  # as set_paused(False) does
    assert resumed.state(0.0, time.time()) == "done" and resumed.next_runs(0.0, time.time(), 5) == []


async def test_a_failed_run_says_so_in_our_words_not_the_library_text() -> None:
    class Broken(FakeAnnouncer):
        async def announce(self, *args: Any) -> tuple[Announcement, Outcome]:
            raise ConnectionError("Error 111 connecting to redis-internal.example:6379")

    data = FlakyData()
    scheduler, reported = runner(data, announcer=Broken())
    await one_shot(data, 0.0)
    await scheduler.tick()
    await wait_for(lambda: reported)
    (run,) = reported
    assert run.result == "failed" and "redis-internal" not in run.message and "6379" not in run.message
    assert run.message == "the run failed on node node-a (ConnectionError; its log has the details)"
    await scheduler.close()


async def test_a_node_stalled_between_its_claim_and_the_start_loses_it_to_another_which_runs_it_once() -> (
    None
):
    """A node that took an occurrence and then went silent (dead, or stalled) holds it only for its
    lease: another node runs it within the grace, and the stalled one, waking, does nothing."""
    data = FlakyData()
    stalled = FakeSounds()
    stalled.hold.clear()
    a_announcer, b_announcer = FakeAnnouncer(), FakeAnnouncer()
    a, a_reported = runner(data, "node-a", announcer=a_announcer, sounds=stalled)
    b, b_reported = runner(data, "node-b", announcer=b_announcer)
    await one_shot(data, 0.0)
    await a.tick()
    await asyncio.wait_for(stalled.asked.wait(), 5)
    await b.tick()
    assert not b_reported  # a holds it (its lease)

    async def b_took_over() -> bool:
        await b.tick()
        return bool(b_reported)

    await eventually(b_took_over)
    assert [r.result for r in b_reported] == [RAN] and b_announcer.started == ["acme"]
    stalled.hold.set()  # a wakes up: its lease is gone
    await a.close()
    await a.tick()
    await b.tick()
    assert not a_announcer.started and not a_reported and len(b_announcer.started) == 1
    await b.close()


async def test_a_scan_of_many_schedules_lets_the_rest_of_the_node_run() -> None:
    """A cold scan computes every cron (seconds for 10k): it must not hold the event loop that long."""
    data = FlakyData()
    scheduler, _ = runner(data)
    store = ScheduleStore(GuardedData(data))
    timing = parse_timing("", "0 9 * * 1-5", "Europe/Berlin", time.time())
    for n in range(200):
        made = new_schedule(
            f"t{n % 10}", selector="all", mode=0, sound_name="", sound_label="m", timing=timing
        )
        await store.put(made)
    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    before = turns
    await scheduler.tick()
    during = turns - before
    other.cancel()
    await asyncio.gather(other, return_exceptions=True)
    assert scheduler.computed == 200 and during >= 200 // 20 - 1
    await scheduler.close()


async def test_many_runners_on_one_store_run_each_occurrence_exactly_once() -> None:
    data = FlakyData()
    announcers = [FakeAnnouncer() for _ in range(5)]
    runners = [runner(data, f"node-{i}", announcer=a) for i, a in enumerate(announcers)]
    for n in range(20):
        await one_shot(data, 0.0, tenant=f"t{n}")

    async def all_ran() -> bool:
        await asyncio.gather(*(r.tick() for r, _ in runners))
        return sum(len(reported) for _, reported in runners) >= 20

    await eventually(all_ran)
    for _ in range(5):  # more scans: nothing runs again
        await asyncio.gather(*(r.tick() for r, _ in runners))
    started = sorted(t for a in announcers for t in a.started)
    assert started == sorted(f"t{n}" for n in range(20))
    assert all(r.result == RAN for _, reported in runners for r in reported)
    for r, _ in runners:
        await r.close()
