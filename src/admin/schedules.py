"""``audio-admin schedules``: announcements at a time or on a cron schedule (issue 21).

    audio-admin ... schedules create --selector zone=kitchen (--sound NAME | --mode N)
                    (--at 2026-12-03T09:00 | --cron "0 9 * * 1-5") --tz Europe/Berlin
                    [--priority N] [--no-resume]
    audio-admin ... schedules list | show ID | pause ID | resume ID | delete ID

``show`` prints the next runs (in the schedule's zone) and the recent runs with
their results; ``--json`` prints the ``Schedule`` messages.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from admin.args import whole
from comms.gen import admin_pb2 as apb

HEADER = ("ID", "STATE", "SELECTOR", "SOUND", "WHEN", "NEXT RUN", "LAST RESULT")
ACTIONS = ("show", "pause", "resume", "delete")


def configure(topics: Any, shared: list[argparse.ArgumentParser]) -> None:
    topic = topics.add_parser("schedules", help="announcements at a time or on a cron schedule")
    actions = topic.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="a new schedule (operator)", parents=shared)
    create.add_argument("--selector", required=True, help="the devices at each run: key=value[,...] or all")
    sound = create.add_mutually_exclusive_group(required=True)
    sound.add_argument("--mode", type=whole, help="the sound a Play of this mode plays")
    sound.add_argument("--sound", help="an uploaded sound, by its file name (extension optional)")
    when = create.add_mutually_exclusive_group(required=True)
    when.add_argument("--at", help="one run at this local time, e.g. 2026-12-03T09:00")
    when.add_argument("--cron", help='five-field cron, e.g. "0 9 * * 1-5" (weekdays at 9:00)')
    create.add_argument("--tz", default="UTC", help="IANA time zone of --at/--cron (default UTC)")
    create.add_argument("--priority", type=whole, default=0, help="0..9, as for announce (default 0)")
    create.add_argument("--no-resume", action="store_true", help="interrupted sounds do not resume")
    actions.add_parser("list", help="the tenant's schedules with their next run", parents=shared)
    for name, text in (
        ("show", "one schedule: its next runs and recent results"),
        ("pause", "no runs until resumed (operator)"),
        ("resume", "runs again from now on; what passed while paused is not run (operator)"),
        ("delete", "remove it (operator)"),
    ):
        actions.add_parser(name, help=text, parents=shared).add_argument("id")


def local(unix: float, zone: str, seconds: bool = False) -> str:
    """In the schedule's zone; in UTC when this machine's tzdata lacks it (older than the server's)."""
    try:
        where = ZoneInfo(zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        where = ZoneInfo("UTC")
    shown = datetime.fromtimestamp(unix, where)
    return shown.strftime("%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z")


def when_text(schedule: apb.Schedule) -> str:
    return f"cron {schedule.cron}" if schedule.cron else f"at {schedule.at}"


def run_text(run: apb.ScheduleRun) -> str:
    if run.result == "ran":
        counts = f"{run.started} started, {run.offline} offline, {run.refused} refused"
        return f"ran: {run.targeted} targeted, {counts}"
    return f"{run.result}: {run.message}"


def row(schedule: apb.Schedule) -> list[str]:
    next_run = local(schedule.next_runs_unix[0], schedule.time_zone) if schedule.next_runs_unix else "-"
    last = run_text(schedule.recent_runs[0]) if schedule.recent_runs else "-"
    return [
        schedule.id, schedule.state, schedule.selector, schedule.sound,
        f"{when_text(schedule)} ({schedule.time_zone})", next_run, last,
    ]  # fmt: skip


def listed_text(schedules: list[apb.Schedule], table: Callable[..., str]) -> str:
    if not schedules:
        return "no schedules"
    return table([row(s) for s in schedules], HEADER)


def shown_text(schedule: apb.Schedule, table: Callable[..., str]) -> str:
    facts = {
        "state": schedule.state,
        "selector": schedule.selector,
        "sound": schedule.sound,
        "when": when_text(schedule),
        "time zone": schedule.time_zone,
        "priority": str(schedule.priority),
        "resume": "no" if schedule.no_resume else "yes",
        "created by": schedule.created_by.rsplit("/", 1)[-1] or "-",
        "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(schedule.created_unix)),
    }
    lines = [f"schedule {schedule.id} ({schedule.tenant})"]
    lines += [f"  {name:<12} {value}" for name, value in facts.items()]
    lines.append("next runs:")
    lines += [f"  {local(t, schedule.time_zone)}" for t in schedule.next_runs_unix] or ["  none"]
    lines.append("recent runs:")
    rows = [
        [local(r.occurrence_unix, schedule.time_zone, seconds=True), r.node or "-", run_text(r)]
        for r in schedule.recent_runs
    ]
    lines.append(table(rows, ("DUE", "NODE", "RESULT")) if rows else "  none yet")
    return "\n".join(lines)


def create_request(tenant: str, args: argparse.Namespace) -> apb.CreateScheduleRequest:
    request = apb.CreateScheduleRequest(
        tenant=tenant,
        selector=args.selector,
        at=args.at or "",
        cron=args.cron or "",
        time_zone=args.tz,
        priority=args.priority,
        no_resume=args.no_resume,
    )
    if args.mode is not None:
        request.mode = args.mode
    else:
        request.sound_name = args.sound
    return request
