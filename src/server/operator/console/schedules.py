"""The console's Schedules page: the tenant's announcement schedules, their next and recent runs.

A client of ``FleetService`` like every page (``Console.invoke``: the same roles, tenant scoping and
audit as the API): a viewer sees the list; an operator also gets the create form and the pause,
resume and delete buttons (each a CSRF-checked POST). Times are shown in each schedule's zone.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from comms.gen import admin_pb2 as apb
from server.operator.calls import ApiError
from server.operator.console.params import whole_number

if TYPE_CHECKING:
    from server.operator.console.web import Console

ACTIONS = {
    "pause": ("PauseSchedule", "paused"),
    "resume": ("ResumeSchedule", "resumed"),
    "delete": ("DeleteSchedule", "deleted"),
}
FIELD_LIMIT = 200  # a form value longer than any the API accepts is cut here; the API then refuses it
MAX_PRIORITY = 10  # one more than the API's, so the API says what is wrong with 10


def _local(unix: float, zone: str) -> str:
    """In the schedule's zone; in UTC if this node's tzdata lacks it (the page still shows)."""
    try:
        where = ZoneInfo(zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        where = ZoneInfo("UTC")
    return datetime.fromtimestamp(unix, where).strftime("%Y-%m-%d %H:%M %Z")


def _run(run: apb.ScheduleRun, zone: str) -> dict[str, Any]:
    if run.result == "ran":
        words = (
            f"{run.targeted} targeted, {run.started} started, {run.offline} offline, {run.refused} refused"
        )
    else:
        words = run.message
    return {"due": _local(run.occurrence_unix, zone), "result": run.result, "words": words, "node": run.node}


def present_schedule(schedule: apb.Schedule) -> dict[str, Any]:
    zone = schedule.time_zone
    return {
        "id": schedule.id,
        "state": schedule.state,
        "selector": schedule.selector,
        "sound": schedule.sound,
        "when": f"cron {schedule.cron}" if schedule.cron else f"at {schedule.at}",
        "zone": zone,
        "priority": schedule.priority,
        "next": [_local(t, zone) for t in schedule.next_runs_unix[:3]],
        "runs": [_run(r, zone) for r in schedule.recent_runs[:5]],
        "by": schedule.created_by.rsplit("/", 1)[-1] or "-",
    }


class SchedulesPage:
    def __init__(self, console: Console) -> None:
        self._console = console

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/schedules", self.page)
        app.router.add_post("/schedules/{tenant}", self.create)
        app.router.add_post("/schedules/{tenant}/{id}/{action}", self.act)

    async def page(self, request: web.Request) -> web.StreamResponse:
        tenant = request.query.get("tenant", "")[:64]
        return await self._show(request, tenant, done=request.query.get("done", "")[:120])

    async def _show(self, request: web.Request, tenant: str, *, done: str = "") -> web.StreamResponse:
        console = self._console
        session = console.session_of(request)
        if session.tenant is None and not tenant:  # a platform operator picks the tenant first
            return console.render(request, "schedules.html", ask_tenant=True, tenant="", done="")
        tenant = tenant or session.tenant or ""
        try:
            listed = await console.invoke(request, "ListSchedules", apb.ListSchedulesRequest(tenant=tenant))
        except ApiError as exc:
            return console.error(request, exc)
        return console.render(
            request,
            "schedules.html",
            ask_tenant=False,
            tenant=tenant,
            done=done,
            schedules=[present_schedule(s) for s in listed.schedules],
        )

    def _back(self, tenant: str, done: str) -> web.HTTPSeeOther:
        return web.HTTPSeeOther("/schedules?" + urlencode({"tenant": tenant, "done": done}))

    async def create(self, request: web.Request) -> web.StreamResponse:
        tenant = request.match_info["tenant"]
        form = self._console.form_of(request)

        def field(name: str) -> str:
            return str(form.get(name, "")).strip()[:FIELD_LIMIT]

        ask = apb.CreateScheduleRequest(
            tenant=tenant,
            selector=field("selector"),
            time_zone=field("tz"),
            priority=whole_number(field("priority") or "0", "priority", below=MAX_PRIORITY + 1),
            no_resume=field("no_resume") == "on",
        )
        if field("when") == "cron":
            ask.cron = field("cron")
        else:
            ask.at = field("at")
        if field("sound_name"):
            ask.sound_name = field("sound_name")
        elif field("mode"):
            ask.mode = whole_number(field("mode"), "mode", below=self._console.admin.mode_count)
        try:
            made = await self._console.invoke(request, "CreateSchedule", ask)
        except ApiError as exc:
            return self._console.error(request, exc)
        following = _local(made.next_runs_unix[0], made.time_zone) if made.next_runs_unix else "none"
        raise self._back(tenant, f"created schedule {made.id}; next run {following}")

    async def act(self, request: web.Request) -> web.StreamResponse:
        tenant, schedule_id, action = (request.match_info[k] for k in ("tenant", "id", "action"))
        if action not in ACTIONS:
            raise web.HTTPNotFound()
        method, words = ACTIONS[action]
        try:
            changed = await self._console.invoke(
                request, method, apb.ScheduleRef(tenant=tenant, id=schedule_id)
            )
        except ApiError as exc:
            return self._console.error(request, exc)
        raise self._back(tenant, f"{words} schedule {changed.id}")
