"""The console's Announce page: one sound on many devices at once, from the fleet page or a device page.

The fleet page links here with its current filter (search, state, mode, labels), a device page
with its own id. The page lists the devices the filter matches, every one ticked: the operator
unticks what should stay quiet, picks the sound (a mode's sound, which is the tenant's upload
where there is one, or a file sent with the call), a priority and whether interrupted sounds
resume, and sends it. The POST is one ``Announce`` call with the ticked ids (the console is a
client of ``FleetService`` like every page: the same role, scope and audit), answered with the
outcome per device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
from aiohttp import web
from multidict import MultiMapping

from comms.gen import admin_pb2 as apb
from server.announce.plan import MAX_PRIORITY
from server.fleet.labels import MAX_SELECTOR
from server.operator.calls import ApiError
from server.operator.console.params import whole_number
from server.operator.groups import MAX_CLIP_BYTES, MAX_TARGET_IDS

if TYPE_CHECKING:
    from server.operator.console.web import Console

NOTHING_TICKED_TEXT = "tick at least one device"
FILTERS = ("q", "online", "mode", "selector")


def listing_of(query: MultiMapping[str], tenant: str, mode_count: int) -> apb.ListDevicesRequest:
    """The fleet page's filter as a ListDevices request (the same fields, the same bounds)."""
    listing = apb.ListDevicesRequest(
        tenant=tenant,
        page_size=MAX_TARGET_IDS,
        search=query.get("q", "")[:64],
        selector=query.get("selector", "")[:MAX_SELECTOR],
    )
    listing.online = {
        "online": apb.ListDevicesRequest.ONLINE,
        "offline": apb.ListDevicesRequest.OFFLINE,
    }.get(query.get("online", ""), apb.ListDevicesRequest.ANY)
    if query.get("mode", ""):
        listing.mode = whole_number(query["mode"], "mode", below=mode_count)
    return listing


class AnnouncePage:
    def __init__(self, console: Console) -> None:
        self._console = console

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/announce", self.page)
        app.router.add_post("/announce", self.send)

    def _show(self, request: web.Request, tenant: str, **values: Any) -> web.StreamResponse:
        """The form (``devices``, ``sounds``, ``filters``) or the outcome (``result``) for ``tenant``."""
        page: dict[str, Any] = {"filters": {}, "devices": [], "sounds": [], "result": None, **values}
        return self._console.render(
            request,
            "announce.html",
            ask_tenant=False,
            tenant=tenant,
            max_priority=MAX_PRIORITY,
            max_clip_mib=MAX_CLIP_BYTES // (1024 * 1024),
            **page,
        )

    async def page(self, request: web.Request) -> web.StreamResponse:
        console = self._console
        session = console.session_of(request)
        query = request.query
        tenant = query.get("tenant", "")[:64] or session.tenant or ""
        filters = {k: query.get(k, "")[:MAX_SELECTOR] for k in FILTERS if query.get(k, "")}
        if not tenant:  # a platform operator picks the tenant first (the filter kept)
            return console.render(request, "announce.html", ask_tenant=True, tenant="", filters=filters)
        device = query.get("device", "")[:80]
        try:
            if device:
                one = await console.invoke(
                    request, "GetDevice", apb.DeviceRef(tenant=tenant, device_id=device)
                )
                devices = [one]
            else:
                listing = listing_of(query, tenant, console.admin.mode_count)
                devices = list((await console.invoke(request, "ListDevices", listing)).devices)
            sounds = await console.invoke(request, "ListSounds", apb.ListSoundsRequest(tenant=tenant))
        except ApiError as exc:
            return console.error(request, exc)
        return self._show(
            request,
            tenant,
            filters=filters,
            devices=[{"id": d.device_id, "online": d.online, "mode": d.mode} for d in devices],
            sounds=[
                {"mode": s.mode, "what": s.filename if s.source == "uploaded" else "built-in"}
                for s in sounds.sounds
            ],
        )

    async def send(self, request: web.Request) -> web.StreamResponse:
        console = self._console
        form = console.form_of(request)
        tenant = str(form.get("tenant", ""))[:64]
        devices = [str(d)[:80] for d in form.getall("device", [])][: MAX_TARGET_IDS + 1]
        ask = apb.AnnounceRequest(
            tenant=tenant,
            device_ids=devices,
            priority=whole_number(str(form.get("priority", "0")), "priority", below=MAX_PRIORITY + 1),
            no_resume=not form.get("resume"),
        )
        try:
            if not devices:
                raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, NOTHING_TICKED_TEXT)
            clip = form.get("clip")
            if form.get("sound") == "clip":
                if not isinstance(clip, web.FileField):
                    raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "choose a file to send")
                ask.clip, ask.clip_name = clip.file.read(MAX_CLIP_BYTES + 1), clip.filename
            else:
                ask.mode = whole_number(str(form.get("sound", "")), "mode", below=console.admin.mode_count)
            result = await console.invoke(request, "Announce", ask)
        except ApiError as exc:
            return console.error(request, exc)
        outcome = [(d, "started") for d in result.started]
        outcome += [(d, "offline") for d in result.offline]
        outcome += [(d, "refused (a higher or equal announcement plays)") for d in result.refused]
        return self._show(
            request,
            tenant,
            result={
                "sound": result.sound,
                "targeted": result.targeted,
                "counts": {
                    "started": len(result.started),
                    "offline": len(result.offline),
                    "refused": len(result.refused),
                },
                "devices": sorted(outcome),
            },
        )
