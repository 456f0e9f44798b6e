"""The console's Enrolment page: one-time codes, the tenant's claim code and the requests it queued.

A client of ``FleetService`` like every page (``Console._invoke``: the same roles, tenant scoping
and audit as the API). Codes are shown once, on the answer to the POST that made them, and never
again (the server keeps hashes); the page shows what an operator needs to set a device up (the CA
fingerprint and the device's command). Approving shows the key fingerprint the device printed, so
the operator can compare before issuing a certificate, and lets them choose the device id.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from comms.gen import admin_pb2 as apb
from server.operator.calls import ApiError
from server.operator.console.params import whole_number

if TYPE_CHECKING:
    from server.operator.console.web import Console

MAX_COUNT = 1000  # as the API's
MAX_TTL_HOURS = 30 * 24
DECISIONS = {"approve": ("ApproveEnrollment", "approved"), "deny": ("DenyEnrollment", "denied")}


def _when(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(unix)) if unix else "-"


def _by(spiffe_id: str) -> str:
    return spiffe_id.rsplit("/", 1)[-1] or "-"


class EnrolmentPage:
    def __init__(self, console: Console) -> None:
        self._console = console

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/enrolment", self.page)
        app.router.add_post("/enrolment/{tenant}/codes", self.create)
        app.router.add_post("/enrolment/{tenant}/codes/{id}/cancel", self.cancel)
        app.router.add_post("/enrolment/{tenant}/requests/{id}/{action}", self.decide)
        app.router.add_post("/enrolment/{tenant}/claim/{action}", self.claim)

    async def page(self, request: web.Request) -> web.StreamResponse:
        tenant = request.query.get("tenant", "")[:64]
        return await self._show(request, tenant, done=request.query.get("done", "")[:80])

    async def _show(
        self,
        request: web.Request,
        tenant: str,
        *,
        done: str = "",
        created: apb.CreateEnrollmentsResponse | None = None,
        claim_made: apb.ClaimCode | None = None,
    ) -> web.StreamResponse:
        console = self._console
        session = console.session_of(request)
        if session.tenant is None and not tenant:  # a platform operator picks the tenant first
            return console.render(request, "enrolment.html", ask_tenant=True, tenant="", done="")
        tenant = tenant or session.tenant or ""
        try:
            codes = await console.invoke(
                request, "ListEnrollments", apb.ListEnrollmentsRequest(tenant=tenant)
            )
            claim = await console.invoke(request, "GetClaimCode", apb.ClaimCodeRequest(tenant=tenant))
            queued = await console.invoke(
                request, "ListPendingEnrollments", apb.ClaimCodeRequest(tenant=tenant)
            )
        except ApiError as exc:
            return console.error(request, exc)
        values: dict[str, Any] = {
            "ask_tenant": False,
            "tenant": tenant,
            "done": done,
            "codes": [
                {"id": e.id, "device": e.device_id, "expires": _when(e.expires_unix), "by": _by(e.created_by)}
                for e in codes.enrollments
            ],
            "created": [
                {"device": e.device_id, "code": e.code, "expires": _when(e.expires_unix), "id": e.id}
                for e in (created.enrollments if created else [])
            ],
            "fingerprint": claim.ca_fingerprint,
            "claim": {
                "enabled": claim.enabled,
                "id": claim.id,
                "since": _when(claim.created_unix),
                "by": _by(claim.created_by),
            },
            "claim_code": claim_made.code if claim_made else "",
            "requests": [
                {
                    "id": r.id,
                    "proposed": r.proposed_device_id,
                    "fingerprint": r.key_fingerprint,
                    "peer": r.peer,
                    "asked": _when(r.created_unix),
                    "expires": _when(r.expires_unix),
                    "state": r.state,
                    "device": r.device_id,
                    "known": r.proposed_id_known,
                }
                for r in queued.requests
            ],
        }
        return console.render(request, "enrolment.html", **values)

    def _back(self, tenant: str, done: str) -> web.HTTPSeeOther:
        return web.HTTPSeeOther("/enrolment?" + urlencode({"tenant": tenant, "done": done}))

    async def create(self, request: web.Request) -> web.StreamResponse:
        tenant = request.match_info["tenant"]
        form = self._console.form_of(request)
        ask = apb.CreateEnrollmentsRequest(tenant=tenant)
        if str(form.get("ttl_hours", "")):
            ask.ttl_s = whole_number(str(form["ttl_hours"]), "hours", below=MAX_TTL_HOURS + 1) * 3600.0
        if str(form.get("count", "")):
            ask.count = whole_number(str(form["count"]), "count", below=MAX_COUNT + 1)
            ask.prefix = str(form.get("prefix", ""))[:80]
        else:
            ask.device_id = str(form.get("device", ""))[:80]
        try:
            created = await self._console.invoke(request, "CreateEnrollments", ask)
        except ApiError as exc:
            return self._console.error(request, exc)
        done = f"{len(created.enrollments)} code(s) made: copy them now, they are not shown again"
        return await self._show(request, tenant, done=done, created=created)

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        tenant, code_id = request.match_info["tenant"], request.match_info["id"]
        ask = apb.CancelEnrollmentRequest(tenant=tenant, id=code_id)
        try:
            cancelled = await self._console.invoke(request, "CancelEnrollment", ask)
        except ApiError as exc:
            return self._console.error(request, exc)
        raise self._back(tenant, f"cancelled the code for {cancelled.device_id}")

    async def decide(self, request: web.Request) -> web.StreamResponse:
        tenant, request_id, action = (request.match_info[k] for k in ("tenant", "id", "action"))
        if action not in DECISIONS:
            raise web.HTTPNotFound()
        method, words = DECISIONS[action]
        ask = apb.DecideEnrollmentRequest(tenant=tenant, id=request_id)
        if action == "approve":
            ask.device_id = str(self._console.form_of(request).get("device_id", ""))[:80]
        try:
            decided = await self._console.invoke(request, method, ask)
        except ApiError as exc:
            return self._console.error(request, exc)
        who = decided.device_id or decided.proposed_device_id
        raise self._back(tenant, f"{words} request {decided.id} ({who})")

    async def claim(self, request: web.Request) -> web.StreamResponse:
        tenant, action = request.match_info["tenant"], request.match_info["action"]
        method = {"enable": "SetClaimCode", "disable": "DisableClaimCode"}.get(action)
        if method is None:
            raise web.HTTPNotFound()
        try:
            claim = await self._console.invoke(request, method, apb.ClaimCodeRequest(tenant=tenant))
        except ApiError as exc:
            return self._console.error(request, exc)
        if action == "disable":
            raise self._back(tenant, "open enrolment is off: the claim code no longer works")
        done = "new claim code made: copy it now, it is not shown again (the previous one no longer works)"
        return await self._show(request, tenant, done=done, claim_made=claim)
