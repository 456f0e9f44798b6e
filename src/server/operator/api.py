"""FleetService: the operator API. Each tenant sees and commands its own fleet, nothing else.

The interceptor has already authenticated the operator and checked its role
for the method (``operator_calls.METHOD_ROLES``); here every device and tenant a
request names is scoped to the operator (``_tenant``, ``_device``): another tenant's device is
NOT_FOUND, exactly like a device that does not exist. Commands go to the
device's live session wherever it is connected (``Fleet.command``), through
the same state machine as its buttons. Every call that changes something, and
every refused call, is an audit event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from auth.errors import InvalidIdentifier
from auth.identity import MAX_ID_LENGTH, Identity, validate_id
from comms.gen import admin_pb2 as apb
from comms.gen import admin_pb2_grpc as apb_grpc
from server.access.interceptor import OperatorCall, OperatorPolicy, acting_as
from server.announce.announcer import Announcer
from server.announce.schedule import ScheduleStore
from server.announce.talk import Talks
from server.audio.tenant_sounds import SoundInfo, SoundRejected, TenantSounds
from server.devices.commands import DISCONNECT, Command
from server.devices.state_machine import Button
from server.fleet.device_view import DeviceView
from server.fleet.labels import BadLabel, DeviceLabels
from server.fleet.node import DeviceOffline, Fleet, history_log
from server.operator.audit import AuditFilter, AuditLog, BadPageToken
from server.operator.calls import ApiError, LocalContext, Note, OperatorCalls, not_found
from server.operator.claims import ClaimAdmin
from server.operator.enrolments import EnrolmentAdmin
from server.operator.groups import GroupCalls
from server.operator.schedules import ScheduleCalls
from server.operator.sign_in import ConsoleSessions
from server.operator.talking import TalkCalls

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_PAGE, MAX_PAGE = 100, 1000
WATCH_BACKLOG = 10_000  # changes a slow watcher may fall behind before its stream ends
OFFLINE_TEXT = "device offline"
MAX_FILTER_CHARS = 80  # search and audit filters: longer than any id, action or operator name
STORED_MODE_ATTEMPTS = 3  # a device connecting again and again while an operator sets its mode
CONNECTING_TEXT = "the device is connecting right now; try again"


def page_size(requested: int) -> int:
    return min(requested or DEFAULT_PAGE, MAX_PAGE)


def bounded(text: str, what: str, limit: int = MAX_FILTER_CHARS) -> str:
    """A free-text filter, refused (not cut) when longer than anything it could match."""
    if len(text) > limit:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"{what} is {len(text)} characters; at most {limit}")
    return text


def online_filter(value: int) -> int:
    """Protobuf keeps enum numbers it does not know: refuse them rather than read them as ANY."""
    if value not in apb.ListDevicesRequest.Online.values():
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT, f"online must be ANY, ONLINE or OFFLINE, not {value}"
        )
    return value


def sound_proto(info: SoundInfo) -> apb.Sound:
    return apb.Sound(
        tenant=info.tenant,
        mode=info.mode,
        source=info.source,
        filename=info.filename,
        length_s=info.length_s,
        sha256=info.sha256,
        uploaded_unix=info.uploaded_at,
        uploaded_by=info.uploaded_by,
    )


class FleetAdmin(
    EnrolmentAdmin, ClaimAdmin, GroupCalls, ScheduleCalls, TalkCalls, apb_grpc.FleetServiceServicer
):
    def __init__(
        self,
        fleet: Fleet,
        audit: AuditLog,
        sounds: TenantSounds,
        mode_count: int,
        labels: DeviceLabels,
        announcer: Announcer,
        schedules: ScheduleStore,
        schedule_cap: int,
        talks: Talks,
        talk_max_s: float,
        console: ConsoleSessions | None = None,
        console_url: str = "",
    ) -> None:
        self._fleet = fleet
        self.labels = labels
        self.announcer = announcer
        self.schedules = schedules
        self.schedule_cap = schedule_cap
        self.talks = talks
        self.talk_max_s = talk_max_s
        self._audit = audit
        self.calls = OperatorCalls(audit)
        self.sounds = sounds
        self.mode_count = mode_count
        self._console = console
        self.console_url = console_url.rstrip("/")  # where sign-in links point

    def policy(self) -> OperatorPolicy:
        return self.calls.policy()

    # --- in-process callers (the console) ----------------------------------------

    async def invoke(self, call: OperatorCall, action: str, request: Message) -> Any:
        """Call a FleetService method in-process as ``call``'s operator: the same role check,
        scoping and audit as over gRPC. Raises ``ApiError``."""
        await self.calls.authorise(call, action)
        with acting_as(call):
            return await getattr(self, action)(request, LocalContext())

    async def watch(
        self, call: OperatorCall, request: apb.WatchDevicesRequest
    ) -> AsyncIterator[apb.DeviceUpdate]:
        """``WatchDevices`` in-process; iterate it in the task that called it."""
        await self.calls.authorise(call, "WatchDevices")
        with acting_as(call):
            async for update in self.WatchDevices(request, LocalContext()):
                yield update

    # --- scope ---------------------------------------------------------------------

    def _tenant(self, call: OperatorCall, requested: str, *, all_allowed: bool = False) -> str | None:
        """The tenant a request may act on: a tenant operator's own; for a platform operator the
        one named (or every tenant, None, where ``all_allowed``)."""
        operator = call.operator
        if operator.tenant is not None:
            if requested and requested != operator.tenant:
                raise not_found(f"tenant {requested[:MAX_ID_LENGTH]}")  # like one that does not exist
            return operator.tenant
        if not requested:
            if all_allowed:
                return None
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "a platform operator must name the tenant")
        try:
            return validate_id(requested, "tenant")
        except InvalidIdentifier as exc:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None

    def _one_tenant(self, call: OperatorCall, requested: str, note: Note) -> str:
        """The one tenant a request acts on (see ``_tenant``); a platform operator's call is audited
        in that tenant's log too."""
        tenant = self._tenant(call, requested)
        assert tenant is not None
        note.tenant = tenant if call.operator.platform else ""
        return tenant

    async def _device(self, call: OperatorCall, ref: apb.DeviceRef, note: Note) -> DeviceView:
        """The device a request names, if the operator may see it and it has ever been seen."""
        note.target = ref.device_id[:64]
        if call.operator.tenant is not None and ref.tenant not in ("", call.operator.tenant):
            raise not_found(f"device {ref.tenant[:64]}/{ref.device_id[:64]}")  # word for word a missing one
        tenant = self._one_tenant(call, ref.tenant, note)
        try:
            identity = Identity(tenant, validate_id(ref.device_id, "device id"))
        except InvalidIdentifier as exc:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        view = await self._fleet.device(identity)
        if view is None or view.record.epoch == 0:
            raise not_found(f"device {tenant}/{identity.device_id}")
        return view

    async def _fresh(self, identity: Identity) -> DeviceView:
        view = await self._fleet.device(identity)
        assert view is not None
        return view

    # --- reading -------------------------------------------------------------------

    async def _matching(self, tenant: str | None, request: apb.ListDevicesRequest) -> list[DeviceView]:
        search, online = bounded(request.search, "search"), online_filter(request.online)
        views = await self._fleet.devices(
            tenant, (lambda r: search.lower() in r.identity.device_id) if search else None
        )
        if request.selector:
            views = await self.selected(views, request.selector)
        if online == apb.ListDevicesRequest.ONLINE:
            views = [v for v in views if v.online]
        elif online == apb.ListDevicesRequest.OFFLINE:
            views = [v for v in views if not v.online]
        if request.HasField("mode"):
            views = [v for v in views if v.record.mode == request.mode]
        return views

    async def ListDevices(
        self, request: apb.ListDevicesRequest, context: grpc.aio.ServicerContext
    ) -> apb.ListDevicesResponse:
        async def work(call: OperatorCall, note: Note) -> apb.ListDevicesResponse:
            tenant = self._tenant(call, request.tenant, all_allowed=True)
            views = await self._matching(tenant, request)
            after = bounded(request.page_token, "page_token", 2 * MAX_ID_LENGTH + 1)  # "tenant/device"
            page = [v for v in views if f"{v.identity.tenant}/{v.identity.device_id}" > after][
                : page_size(request.page_size)
            ]
            more = page and page[-1] is not views[-1]
            last = page[-1].identity if more else None
            return apb.ListDevicesResponse(
                devices=await self.labelled(page),
                next_page_token=f"{last.tenant}/{last.device_id}" if last else "",
                total=len(views),
            )

        return await self.calls.run(context, "ListDevices", work, changes=False)

    async def GetDevice(self, request: apb.DeviceRef, context: grpc.aio.ServicerContext) -> apb.Device:
        async def work(call: OperatorCall, note: Note) -> apb.Device:
            (device,) = await self.labelled([await self._device(call, request, note)])
            return device

        return await self.calls.run(context, "GetDevice", work, changes=False)

    async def WatchDevices(
        self, request: apb.WatchDevicesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[apb.DeviceUpdate]:
        """A snapshot, then every change anywhere in the fleet, for the operator's tenant(s)."""
        changes: asyncio.Queue[tuple[DeviceView, str] | None] = asyncio.Queue()
        scope: list[str | None] = []

        async def on_change(view: DeviceView, change: str) -> None:
            if scope and scope[0] not in (None, view.identity.tenant):
                return
            if changes.qsize() >= WATCH_BACKLOG:
                changes.put_nowait(None)  # too far behind: end the stream, the operator watches again
                return
            changes.put_nowait((view, change))

        async def snapshot(call: OperatorCall, note: Note) -> list[DeviceView]:
            scope.append(self._tenant(call, request.tenant, all_allowed=True))
            return await self._matching(scope[0], apb.ListDevicesRequest())

        unwatch = self._fleet.watch(on_change)  # before the snapshot: no change falls between them
        try:
            views = await self.calls.run(context, "WatchDevices", snapshot, changes=False)
            for view in views:
                yield apb.DeviceUpdate(kind=apb.DeviceUpdate.SNAPSHOT, device=view.to_proto())
            yield apb.DeviceUpdate(kind=apb.DeviceUpdate.SNAPSHOT_END)
            while True:
                item = await changes.get()
                if item is None:
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED, "watcher fell too far behind; watch again"
                    )
                    return
                view, change = item
                yield apb.DeviceUpdate(kind=apb.DeviceUpdate.CHANGED, device=view.to_proto(), change=change)
        finally:
            unwatch()

    async def ListDeviceEvents(
        self, request: apb.DeviceRef, context: grpc.aio.ServicerContext
    ) -> apb.ListDeviceEventsResponse:
        async def work(call: OperatorCall, note: Note) -> apb.ListDeviceEventsResponse:
            view = await self._device(call, request, note)
            history = self._fleet.history
            rows = (
                await self._guarded(history.recent(history_log(view.identity), 50, None)) if history else []
            )
            events = []
            for _, raw in rows:
                entry = json.loads(raw)
                events.append(
                    apb.DeviceEvent(
                        time_unix=float(entry["time"]), what=str(entry["what"]), node=str(entry["node"])
                    )
                )
            return apb.ListDeviceEventsResponse(events=events)

        return await self.calls.run(context, "ListDeviceEvents", work, changes=False)

    async def ListAuditEvents(
        self, request: apb.ListAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> apb.ListAuditEventsResponse:
        async def work(call: OperatorCall, note: Note) -> apb.ListAuditEventsResponse:
            tenant = self._tenant(call, request.tenant, all_allowed=True)
            where = AuditFilter(
                bounded(request.action, "action"),
                bounded(request.device_id, "device_id"),
                bounded(request.operator, "operator"),
                request.refused_only,
            )
            try:
                events, token = await self._audit.list(
                    tenant, page_size(request.page_size), request.page_token, where
                )
            except BadPageToken as exc:
                raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
            return apb.ListAuditEventsResponse(
                events=[
                    apb.AuditEvent(
                        id=e.id,
                        time_unix=e.time,
                        operator=e.operator,
                        role=e.role,
                        tenant=e.tenant,
                        action=e.action,
                        target=e.target,
                        parameters=_json(e.parameters),
                        result=e.result,
                        message=e.message,
                        request_id=e.request_id,
                    )
                    for e in events
                ],
                next_page_token=token,
            )

        return await self.calls.run(context, "ListAuditEvents", work, changes=False)

    # --- commands ------------------------------------------------------------------

    async def _command(
        self, context: grpc.aio.ServicerContext, action: str, ref: apb.DeviceRef, command: Command
    ) -> apb.CommandResult:
        """A call that sends ``command`` to the live device (offline: FAILED_PRECONDITION)."""

        async def work(call: OperatorCall, note: Note) -> apb.CommandResult:
            view = await self._device(call, ref, note)
            try:
                return await self._deliver(view, command)
            except DeviceOffline:
                raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, OFFLINE_TEXT) from None

        return await self.calls.run(context, action, work, changes=True)

    async def _deliver(self, view: DeviceView, command: Command) -> apb.CommandResult:
        """``command`` to the live device wherever it is; ``DeviceOffline`` passes through."""
        try:
            node = await self._fleet.command(view.identity, command)
        except TimeoutError:
            raise ApiError(
                grpc.StatusCode.UNAVAILABLE, "the server node holding the device did not answer; try again"
            ) from None
        return apb.CommandResult(device=(await self._fresh(view.identity)).to_proto(), node=node)

    async def Play(self, request: apb.DeviceRef, context: grpc.aio.ServicerContext) -> apb.CommandResult:
        return await self._command(context, "Play", request, Command.press(Button.PLAY))

    async def Stop(self, request: apb.DeviceRef, context: grpc.aio.ServicerContext) -> apb.CommandResult:
        return await self._command(context, "Stop", request, Command.press(Button.STOP))

    async def Disconnect(
        self, request: apb.DeviceRef, context: grpc.aio.ServicerContext
    ) -> apb.CommandResult:
        return await self._command(context, "Disconnect", request, Command(DISCONNECT))

    async def SetMode(
        self, request: apb.SetModeRequest, context: grpc.aio.ServicerContext
    ) -> apb.CommandResult:
        async def work(call: OperatorCall, note: Note) -> apb.CommandResult:
            note.parameters["mode"] = request.mode
            view = await self._device(call, request.device, note)
            if request.mode >= self.mode_count:
                raise ApiError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"mode {request.mode} is outside 0..{self.mode_count - 1}",
                )
            return await self._set_mode(view, request.mode)

        return await self.calls.run(context, "SetMode", work, changes=True)

    async def _set_mode(self, view: DeviceView, mode: int) -> apb.CommandResult:
        """To the live device; else stored for its next connection, compare-and-set on the session
        the view was read with: a device that connected meanwhile gets it through its node instead
        (its live mode would otherwise win over the stored one, and "stored" would be untrue)."""
        command = Command.select_mode(mode)
        for _ in range(STORED_MODE_ATTEMPTS):
            with contextlib.suppress(DeviceOffline):
                return await self._deliver(view, command)
            session = view.record.session_id
            if await self._fleet.change_record(view.identity, {"mode": mode}, session):
                with contextlib.suppress(DeviceOffline):  # went live as we wrote: it may hold the old mode
                    return await self._deliver(view, command)
                fresh = await self._fresh(view.identity)
                self._fleet.publish_view(fresh, "mode")
                return apb.CommandResult(device=fresh.to_proto(), stored_only=True)
            view = await self._fresh(view.identity)  # a new session was claimed: deliver to it
        raise ApiError(grpc.StatusCode.UNAVAILABLE, CONNECTING_TEXT)

    async def RevokeDevice(self, request: apb.DeviceRef, context: grpc.aio.ServicerContext) -> apb.Device:
        async def work(call: OperatorCall, note: Note) -> apb.Device:
            view = await self._device(call, request, note)
            serial = view.record.cert_serial
            note.parameters["cert_serial"] = f"{serial:x}" if serial is not None else ""
            await self._fleet.change_record(view.identity, {"revoked": True, "revoked_serial": serial})
            await self._fleet.revoke(view.identity)  # every node ends its streams now
            fresh = await self._fresh(view.identity)
            self._fleet.publish_view(fresh, "revoked")
            return fresh.to_proto()

        return await self.calls.run(context, "RevokeDevice", work, changes=True)

    async def UnrevokeDevice(self, request: apb.DeviceRef, context: grpc.aio.ServicerContext) -> apb.Device:
        async def work(call: OperatorCall, note: Note) -> apb.Device:
            view = await self._device(call, request, note)
            await self._fleet.change_record(view.identity, {"revoked": False, "revoked_serial": None})
            fresh = await self._fresh(view.identity)
            self._fleet.publish_view(fresh, "unrevoked")
            return fresh.to_proto()

        return await self.calls.run(context, "UnrevokeDevice", work, changes=True)

    # --- sounds --------------------------------------------------------------------

    async def ListSounds(
        self, request: apb.ListSoundsRequest, context: grpc.aio.ServicerContext
    ) -> apb.ListSoundsResponse:
        async def work(call: OperatorCall, note: Note) -> apb.ListSoundsResponse:
            tenant = self._one_tenant(call, request.tenant, note)
            sounds = await self._guarded(self.sounds.list(tenant))
            return apb.ListSoundsResponse(sounds=[sound_proto(s) for s in sounds])

        return await self.calls.run(context, "ListSounds", work, changes=False)

    async def UploadSound(
        self, request_iterator: AsyncIterator[apb.UploadSoundChunk], context: grpc.aio.ServicerContext
    ) -> apb.Sound:
        async def work(call: OperatorCall, note: Note) -> apb.Sound:
            data, first = bytearray(), None
            async for chunk in request_iterator:
                if first is None:
                    first = chunk
                    note.parameters.update(mode=chunk.mode, filename=chunk.filename[:200])
                    note.target = f"mode {chunk.mode}"
                    tenant = self._one_tenant(call, chunk.tenant, note)
                data += chunk.data
                if len(data) > self.sounds.max_bytes:
                    raise ApiError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"the file is larger than {self.sounds.max_bytes} bytes",
                    )
            if first is None:
                raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "no data: send the mode and the file")
            note.parameters["bytes"] = len(data)
            info = await self._guarded(
                self.sounds.upload(tenant, first.mode, first.filename, bytes(data), call.auth.spiffe_id)
            )
            note.parameters["sha256"] = info.sha256
            return sound_proto(info)

        return await self.calls.run(context, "UploadSound", work, changes=True)

    async def ResetSound(
        self, request: apb.ResetSoundRequest, context: grpc.aio.ServicerContext
    ) -> apb.Sound:
        async def work(call: OperatorCall, note: Note) -> apb.Sound:
            tenant = self._one_tenant(call, request.tenant, note)
            note.target, note.parameters["mode"] = f"mode {request.mode}", request.mode
            return sound_proto(await self._guarded(self.sounds.reset(tenant, request.mode)))

        return await self.calls.run(context, "ResetSound", work, changes=True)

    async def CreateConsoleLogin(
        self, request: apb.CreateConsoleLoginRequest, context: grpc.aio.ServicerContext
    ) -> apb.ConsoleLogin:
        async def work(call: OperatorCall, note: Note) -> apb.ConsoleLogin:
            if self._console is None:
                raise ApiError(
                    grpc.StatusCode.FAILED_PRECONDITION, "the console is off on this server (--console-bind)"
                )
            token, expires = await self._guarded(self._console.create_login(call.auth))
            return apb.ConsoleLogin(url=f"{self.console_url}/login/{token}", expires_unix=expires)

        return await self.calls.run(context, "CreateConsoleLogin", work, changes=True)

    async def _guarded(self, work: Awaitable[T]) -> T:
        """A sound the operator got wrong is INVALID_ARGUMENT with the reason. The shared data
        maps its own failures to ``StoreUnavailable`` (UNAVAILABLE) where they happen; anything
        else is a bug and surfaces as one (INTERNAL, audited, the traceback in the log), never
        disguised as an outage the operator would wait out."""
        try:
            return await work
        except (SoundRejected, BadLabel) as exc:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None


def _json(parameters: dict[str, object]) -> str:
    return json.dumps(parameters, separators=(",", ":"), sort_keys=True)
