"""The operator web console: server-rendered pages (Jinja2) over HTTPS, live through ``EventSource``.

It is a client of ``FleetService`` (``FleetAdmin.invoke``, in-process): every
page and action goes through the same role check, tenant scoping and audit
as the API, as the operator the session was opened for. Security:

* sessions open only from a one-time link (``sessions.py``); the cookie is
  ``HttpOnly``, ``Secure``, ``SameSite=Strict`` and expires; logout ends it;
* every POST carries the session's CSRF token (refused and audited without);
* a strict Content-Security-Policy (no inline script or style), no caching,
  no referrer; sign-in attempts are rate-limited per client address;
* another tenant's device is 404, exactly like a missing one.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import ssl
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import grpc
import jinja2
import soundfile
from aiohttp import web

from auth.operators import Role
from auth.reasons import Reason
from comms.audio_format import SAMPLE_RATE
from comms.gen import admin_pb2 as apb
from server.access.interceptor import OperatorCall
from server.errors import STORE_UNAVAILABLE_TEXT, StoreUnavailable, describe
from server.limits import TokenBucket
from server.operator.api import FleetAdmin
from server.operator.calls import ApiError
from server.operator.console.announce import AnnouncePage, listing_of
from server.operator.console.enrolment import EnrolmentPage
from server.operator.console.live import LIVE_LIMIT_TEXT, LiveStreams
from server.operator.console.params import BadParameter, whole_number
from server.operator.console.present import present
from server.operator.console.schedules import SchedulesPage
from server.operator.console.talk import TalkSocket
from server.operator.sign_in import ConsoleSession, ConsoleSessions
from server.supervision import TaskOwner

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
COOKIE = "audio_console"
LOGIN_RATE = (0.1, 10)  # sign-in attempts per second and burst, per client address
LOGIN_TRACKED = 10_000
HEARTBEAT_S = 15.0
RECHECK_S = 0.5  # a live stream re-checks its session this often, whatever the traffic
LIVE_BACKLOG = 10_000  # updates a slow page may fall behind before its stream ends (it reconnects)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Strict-Transport-Security": "max-age=31536000",
    "Cross-Origin-Opener-Policy": "same-origin",
}
HTTP_STATUS = {
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.UNAVAILABLE: 503,
}
ACTIONS = {  # form action -> (FleetService method, what the page says afterwards)
    "play": ("Play", "Play pressed"),
    "stop": ("Stop", "Stop pressed"),
    "disconnect": ("Disconnect", "disconnected"),
    "revoke": ("RevokeDevice", "revoked"),
    "unrevoke": ("UnrevokeDevice", "unrevoked"),
}
CONFIRM = {"disconnect", "revoke"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SESSION = web.RequestKey("session", ConsoleSession)
CALL = web.RequestKey("call", OperatorCall)
FORM: web.RequestKey[Any] = web.RequestKey("form", object)


class Console:
    def __init__(self, admin: FleetAdmin, sessions: ConsoleSessions) -> None:
        self.admin = admin
        self.sessions = sessions
        self._logins: OrderedDict[str, TokenBucket] = OrderedDict()
        self._templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self._live = LiveStreams()
        self.runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle ---------------------------------------------------------------

    def app(self) -> web.Application:
        limit = self.admin.sounds.max_bytes + 64 * 1024  # a sound upload is the largest request
        app = web.Application(middlewares=[self._headers, self._session], client_max_size=limit)
        app.router.add_get("/login/{token}", self.login)
        app.router.add_post("/logout", self.logout)
        app.router.add_get("/", self.fleet)
        app.router.add_get("/events", self.events)
        app.router.add_get("/devices/{tenant}/{device}", self.device)
        app.router.add_get("/devices/{tenant}/{device}/confirm/{action}", self.confirm)
        app.router.add_post("/devices/{tenant}/{device}/{action}", self.act)
        app.router.add_get("/sounds", self.sounds)
        app.router.add_get("/sounds/{tenant}/{mode}/preview.wav", self.preview)
        app.router.add_post("/sounds/{tenant}/{mode}/{action}", self.sound_action)
        app.router.add_get("/audit", self.audit)
        EnrolmentPage(self).routes(app)
        AnnouncePage(self).routes(app)
        SchedulesPage(self).routes(app)
        TalkSocket(self).routes(app)
        app.router.add_static("/static/", HERE / "static", append_version=True)
        return app

    async def start(self, bind: str, tls: ssl.SSLContext, reuse_port: bool) -> int:
        host, _, port = bind.rpartition(":")
        self.runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host.strip("[]"), int(port), ssl_context=tls, reuse_port=reuse_port)
        await site.start()
        sockets = list(getattr(site._server, "sockets", None) or [])
        self.port = int(sockets[0].getsockname()[1]) if sockets else int(port)
        log.info("console.listening", extra={"bind": bind, "port": self.port})
        return self.port

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # --- middleware ----------------------------------------------------------------

    @web.middleware
    async def _headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every answer carries the security headers, error pages included; a bad value in the
        request is a 400 that says what was wrong; a bug is a 500 page (traceback in the log only)."""
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(SECURITY_HEADERS)
            raise
        except BadParameter as exc:
            response = self._page("message.html", 400, title="Could not do that", message=str(exc))
        except Exception:
            log.exception("console.error", extra={"method": request.method, "path": request.path[:200]})
            response = self._page("message.html", 500, title="Something went wrong", message=BUG_TEXT)
        if not response.prepared:
            response.headers.update(SECURITY_HEADERS)
        return response

    @web.middleware
    async def _session(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(("/login/", "/static/")):
            return await handler(request)
        try:
            session = await self.sessions.get(request.cookies.get(COOKIE, ""))
        except Exception as exc:  # sessions live in the shared store: its outage is a 503, not a bug
            return self._store_down(exc)
        if session is None:
            return self._page("message.html", 401, title="Sign in", message=SIGN_IN_TEXT)
        request[SESSION] = session
        request[CALL] = OperatorCall(session.auth, uuid.uuid4().hex)
        if request.method == "POST":
            try:
                form = await request.post()
            except (ValueError, UnicodeError, aiohttp.ClientPayloadError) as exc:
                raise BadParameter("the form could not be read; reload the page and try again") from exc
            request[FORM] = form
            if not session.csrf_ok(str(form.get("csrf", ""))):
                await self.admin.calls.console_event(
                    request[CALL], "console:" + request.path, Reason.CONSOLE_CSRF
                )
                return self._page("message.html", 403, title="Refused", message=CSRF_TEXT)
        return await handler(request)

    # --- helpers -------------------------------------------------------------------------

    def _page(self, name: str, status: int = 200, **values: Any) -> web.Response:
        values.setdefault("session", None)
        body = self._templates.get_template(name).render(**values)
        return web.Response(text=body, status=status, content_type="text/html")

    def _render(self, request: web.Request, name: str, **values: Any) -> web.Response:
        session: ConsoleSession = request[SESSION]
        return self._page(
            name,
            session=session,
            may_operate=session.auth.operator.role >= Role.OPERATOR,
            may_admin=session.auth.operator.role >= Role.ADMIN,
            mode_count=self.admin.mode_count,
            **values,
        )

    async def _invoke(self, request: web.Request, action: str, message: Any) -> Any:
        try:
            return await self.admin.invoke(request[CALL], action, message)
        except StoreUnavailable:  # audited by the call; the page says "try again", not a bug
            raise ApiError(grpc.StatusCode.UNAVAILABLE, STORE_UNAVAILABLE_TEXT) from None

    # for the pages in modules of their own (enrolment.py, schedules.py)
    invoke = _invoke
    render = _render

    @staticmethod
    def session_of(request: web.Request) -> ConsoleSession:
        return request[SESSION]

    @staticmethod
    def form_of(request: web.Request) -> Any:
        return request[FORM]

    def _store_down(self, exc: Exception) -> web.Response:
        log.warning("console.store_unavailable", extra={"error": describe(exc)})
        return self._page("message.html", 503, title="Try again shortly", message=STORE_UNAVAILABLE_TEXT)

    def _error(self, request: web.Request, exc: ApiError) -> web.Response:
        status = HTTP_STATUS.get(exc.code, 500)
        title = {404: "Not found", 403: "Not allowed", 409: "Not now"}.get(status, "Could not do that")
        session = request.get(SESSION)
        return self._page("message.html", status, title=title, message=exc.message, session=session)

    error = _error
    page = _page

    # --- sign-in ---------------------------------------------------------------------

    def _admit_login(self, request: web.Request) -> bool:
        client = request.remote or "?"
        bucket = self._logins.pop(client, None) or TokenBucket(*LOGIN_RATE)
        self._logins[client] = bucket
        while len(self._logins) > LOGIN_TRACKED:
            self._logins.popitem(last=False)
        return bucket.take()

    async def login(self, request: web.Request) -> web.StreamResponse:
        if not self._admit_login(request):
            log.warning("console.login_rate_limited", extra={"client": request.remote})
            return self._page("message.html", 429, title="Slow down", message="Too many sign-in attempts.")
        try:
            opened = await self.sessions.redeem(request.match_info["token"])
        except Exception as exc:
            return self._store_down(exc)
        if opened is None:
            log.warning("console.login_refused", extra={"client": request.remote})
            return self._page("message.html", 403, title="Link not valid", message=USED_LINK_TEXT)
        session_id, session = opened
        log.info("console.login", extra={"operator": session.spiffe_id, "role": session.role})
        await self.admin.calls.console_event(OperatorCall(session.auth, uuid.uuid4().hex), "console:sign-in")
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            COOKIE,
            session_id,
            max_age=max(1, int(session.expires - time.time())),
            httponly=True,
            secure=True,
            samesite="Strict",
            path="/",
        )
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        await self.sessions.end(request.cookies.get(COOKIE, ""))
        await self.admin.calls.console_event(request[CALL], "console:sign-out")
        response = self._page("message.html", title="Signed out", message="You are signed out.")
        response.del_cookie(COOKIE, path="/")
        return response

    # --- pages -------------------------------------------------------------------------

    async def fleet(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        listing = listing_of(query, "", self.admin.mode_count)
        online = query.get("online", "")
        try:
            response = await self._invoke(request, "ListDevices", listing)
        except ApiError as exc:
            return self._error(request, exc)
        devices = [present(d) for d in response.devices]
        counts = {
            "total": len(devices),
            "online": sum(d["online"] for d in devices),
            "offline": sum(d["state"] == "offline" for d in devices),
            "revoked": sum(d["revoked"] for d in devices),
        }
        filters = {
            "q": listing.search,
            "online": online,
            "mode": query.get("mode", ""),
            "selector": listing.selector,
        }
        tenants = {d["tenant"] for d in devices}
        announce = {k: v for k, v in filters.items() if v}
        if len(tenants) == 1:  # a platform operator's list of one tenant: announce there
            announce["tenant"] = tenants.pop()
        return self._render(
            request,
            "fleet.html",
            devices=devices,
            counts=counts,
            filters=filters,
            announce_query=urlencode(announce),
        )

    async def device(self, request: web.Request) -> web.StreamResponse:
        ref = apb.DeviceRef(tenant=request.match_info["tenant"], device_id=request.match_info["device"])
        try:
            device = await self._invoke(request, "GetDevice", ref)
            history = await self._invoke(request, "ListDeviceEvents", ref)
            audit = await self._invoke(
                request,
                "ListAuditEvents",
                apb.ListAuditEventsRequest(tenant=ref.tenant, device_id=ref.device_id, page_size=20),
            )
        except ApiError as exc:
            return self._error(request, exc)
        events = [{"time": e.time_unix, "what": e.what, "by": "device"} for e in history.events]
        events += [
            {"time": e.time_unix, "what": f"{e.action}: {e.result}", "by": e.operator.rsplit("/", 1)[-1]}
            for e in audit.events
        ]
        events.sort(key=lambda e: -float(e["time"]))
        for event in events:
            event["when"] = time.strftime("%H:%M:%S", time.gmtime(float(event["time"])))
        done = request.query.get("done", "")
        return self._render(request, "device.html", d=present(device), events=events[:30], done=done[:40])

    async def confirm(self, request: web.Request) -> web.StreamResponse:
        action = request.match_info["action"]
        if action not in CONFIRM:
            raise web.HTTPNotFound()
        tenant, device = request.match_info["tenant"], request.match_info["device"]
        return self._render(request, "confirm.html", action=action, tenant=tenant, device_id=device)

    async def act(self, request: web.Request) -> web.StreamResponse:
        tenant, device, action = (request.match_info[k] for k in ("tenant", "device", "action"))
        ref = apb.DeviceRef(tenant=tenant, device_id=device)
        form = request[FORM]
        try:
            if action == "mode":
                if not form.get("mode", ""):
                    raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "choose a mode")
                mode = whole_number(str(form["mode"]), "mode", below=self.admin.mode_count)
                result = await self._invoke(request, "SetMode", apb.SetModeRequest(device=ref, mode=mode))
                done = f"mode {mode}" + (" (stored: offline)" if result.stored_only else "")
            elif action == "labels":
                change = labels_request(ref, str(form.get("set", "")), str(form.get("remove", "")))
                changed = await self._invoke(request, "SetLabels", change)
                done = "labels: " + (" ".join(f"{x.key}={x.value}" for x in changed.labels) or "none")
            elif action in ACTIONS:
                method, done = ACTIONS[action]
                await self._invoke(request, method, ref)
            else:
                raise web.HTTPNotFound()
        except ApiError as exc:
            return self._error(request, exc)
        raise web.HTTPSeeOther(f"/devices/{quote(tenant)}/{quote(device)}?" + urlencode({"done": done}))

    async def sounds(self, request: web.Request) -> web.StreamResponse:
        tenant = request.query.get("tenant", "")[:64]
        if request[SESSION].tenant is None and not tenant:  # a platform operator picks the tenant first
            return self._render(request, "sounds.html", sounds=[], done="", ask_tenant=True)
        try:
            listing = await self._invoke(request, "ListSounds", apb.ListSoundsRequest(tenant=tenant))
        except ApiError as exc:
            return self._error(request, exc)
        done = request.query.get("done", "")[:60]
        return self._render(request, "sounds.html", sounds=list(listing.sounds), done=done, ask_tenant=False)

    async def preview(self, request: web.Request) -> web.StreamResponse:
        """The sound a mode plays for the tenant, as WAV the browser can play."""
        tenant = request.match_info["tenant"]
        mode = whole_number(request.match_info["mode"], "mode", below=self.admin.mode_count)
        try:  # the same scope and role as listing the sounds
            await self._invoke(request, "ListSounds", apb.ListSoundsRequest(tenant=tenant))
        except ApiError as exc:
            return self._error(request, exc)
        clip = await self.admin.sounds.clip(tenant, mode)
        buffer = io.BytesIO()
        await asyncio.to_thread(
            soundfile.write, buffer, clip.pcm, SAMPLE_RATE, format="WAV", subtype="PCM_16"
        )
        return web.Response(body=buffer.getvalue(), content_type="audio/wav", headers=SECURITY_HEADERS)

    async def sound_action(self, request: web.Request) -> web.StreamResponse:
        tenant, action = request.match_info["tenant"], request.match_info["action"]
        mode = whole_number(request.match_info["mode"], "mode", below=self.admin.mode_count)
        form = request[FORM]
        try:
            if action == "reset":
                await self._invoke(request, "ResetSound", apb.ResetSoundRequest(tenant=tenant, mode=mode))
                done = f"mode {mode}: built-in sound"
            elif action == "upload":
                upload = form.get("file")
                if not isinstance(upload, web.FileField):
                    raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "choose a file")
                data = upload.file.read(self.admin.sounds.max_bytes + 1)
                sound = await self._invoke(
                    request, "UploadSound", _chunks(tenant, mode, upload.filename, data)
                )
                done = f"mode {mode}: {sound.filename} ({sound.length_s:.1f} s)"
            else:
                raise web.HTTPNotFound()
        except ApiError as exc:
            return self._error(request, exc)
        raise web.HTTPSeeOther("/sounds?" + urlencode({"tenant": tenant, "done": done}))

    async def audit(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        listing = apb.ListAuditEventsRequest(
            page_size=50,
            page_token=query.get("page", "")[:64],
            action=query.get("action", "")[:64],
            device_id=query.get("device", "")[:64],
            operator=query.get("by", "")[:64],
            refused_only=query.get("refused", "") == "on",
        )
        try:
            response = await self._invoke(request, "ListAuditEvents", listing)
        except ApiError as exc:
            return self._error(request, exc)
        events = [
            {
                "when": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.time_unix)),
                "operator": e.operator.split("/", 3)[-1] or "-",
                "role": e.role or "-",
                "tenant": e.tenant or "-",
                "action": e.action,
                "target": e.target or "-",
                "result": e.result,
                "refused": e.result != "OK",
                "detail": e.message or ("" if e.parameters in ("", "{}") else e.parameters),
            }
            for e in response.events
        ]
        filters = {k: query.get(k, "") for k in ("action", "device", "by", "refused")}
        return self._render(
            request, "audit.html", events=events, filters=filters, next_page=response.next_page_token
        )

    # --- live ------------------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: every change of the operator's devices (optionally one device).

        The watch runs in a task of its own (``_pump``): a timeout here must never cancel it
        mid-read, which would close the watch after the first quiet spell. The session is checked
        again every ``RECHECK_S`` whatever the traffic, so the stream ends within about a second of
        sign-out, expiry or revocation even while the fleet is busy."""
        session: ConsoleSession = request[SESSION]
        cookie = request.cookies.get(COOKIE, "")
        if not self._live.open(cookie, session.spiffe_id):
            log.warning("console.live_limit", extra={"operator": session.spiffe_id})
            return self._page("message.html", 429, title="Too many live pages", message=LIVE_LIMIT_TEXT)
        try:
            return await self._stream(request, cookie)
        finally:
            self._live.close(cookie, session.spiffe_id)

    async def _stream(self, request: web.Request, cookie: str) -> web.StreamResponse:
        only = request.query.get("device", "")
        response = web.StreamResponse(headers={**SECURITY_HEADERS, "Content-Type": "text/event-stream"})
        await response.prepare(request)
        updates: asyncio.Queue[apb.DeviceUpdate | None] = asyncio.Queue(LIVE_BACKLOG)
        async with TaskOwner("console-live") as tasks:  # the pump ends with the stream
            tasks.spawn(self._pump(request[CALL], updates), "pump")
            await self._relay(response, updates, cookie, only)
        return response

    async def _relay(
        self,
        response: web.StreamResponse,
        updates: asyncio.Queue[apb.DeviceUpdate | None],
        cookie: str,
        only: str,
    ) -> None:
        """Updates to the page as server-sent events, until the watch or the session ends."""
        loop = asyncio.get_running_loop()
        next_check = loop.time() + RECHECK_S
        quiet_since = loop.time()
        try:
            while True:
                update: apb.DeviceUpdate | None = None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, next_check - loop.time())):
                        update = await updates.get()
                        if update is None:
                            break  # the watch ended (fell behind, or the server is stopping)
                if loop.time() >= next_check:
                    if not await self._still_signed_in(cookie):
                        break  # signed out, expired or revoked: the stream ends with the session
                    next_check = loop.time() + RECHECK_S
                if update is None:
                    if loop.time() - quiet_since >= HEARTBEAT_S:
                        await response.write(b": keep-alive\n\n")  # a gone browser shows up here
                        quiet_since = loop.time()
                    continue
                if update.kind != apb.DeviceUpdate.CHANGED:
                    continue
                shown = present(update.device)
                if only and shown["key"] != only:
                    continue
                payload = json.dumps({"change": update.change, "device": shown}, separators=(",", ":"))
                await response.write(f"event: device\ndata: {payload}\n\n".encode())
                quiet_since = loop.time()
        except ConnectionResetError:
            pass

    async def _pump(self, call: OperatorCall, updates: asyncio.Queue[apb.DeviceUpdate | None]) -> None:
        """Iterates the in-process watch in a task of its own (its context stays in one task)."""
        watch = self.admin.watch(call, apb.WatchDevicesRequest())
        try:
            async for update in watch:
                if updates.full():
                    log.warning("console.live_behind", extra={"operator": call.auth.spiffe_id})
                    break  # the page reconnects and gets a fresh snapshot
                updates.put_nowait(update)
        except (ApiError, StoreUnavailable):
            pass  # refused (audited by the call) or the store is away: the stream ends
        except Exception:
            log.exception("console.events_failed")
        finally:
            with contextlib.suppress(Exception):
                await watch.aclose()  # type: ignore[attr-defined]
            with contextlib.suppress(asyncio.QueueFull):
                updates.put_nowait(None)

    async def _still_signed_in(self, cookie: str) -> bool:
        try:
            return await self.sessions.get(cookie) is not None
        except Exception as exc:  # the store is away: end the stream; the page's reconnect gets a 503
            log.warning("console.live_check_failed", extra={"error": type(exc).__name__})
            return False


def labels_request(ref: apb.DeviceRef, set_text: str, remove_text: str) -> apb.SetLabelsRequest:
    """The device page's label form: ``key=value`` terms and keys to remove, each separated by
    spaces or commas. Only the shape is read here; the API checks every key and value."""
    terms = set_text.replace(",", " ").split()
    keys = remove_text.replace(",", " ").split()
    if not terms and not keys:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "give labels to set (key=value) or keys to remove")
    labels = []
    for term in terms:
        key, equals, value = term.partition("=")
        if not equals:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"{term[:40]!r} is not key=value")
        labels.append(apb.Label(key=key, value=value))
    return apb.SetLabelsRequest(device=ref, set=labels, remove=keys)


async def _chunks(tenant: str, mode: int, filename: str, data: bytes) -> AsyncIterator[apb.UploadSoundChunk]:
    yield apb.UploadSoundChunk(tenant=tenant, mode=mode, filename=filename[:200], data=data)


SIGN_IN_TEXT = (
    "Sign in with a one-time link: run `audio-admin --tenant TENANT --operator NAME console login` "
    "and open the link it prints."
)
CSRF_TEXT = (
    "The form was not sent by this console (its CSRF token is missing or wrong); reload and try again."
)
BUG_TEXT = "The console hit an internal error; it is in the server log. Reload to try again."
USED_LINK_TEXT = (
    "This sign-in link was used already or has expired (links last 5 minutes and work once). "
    "Run `audio-admin ... console login` for a new one."
)
