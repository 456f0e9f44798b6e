"""FleetService's calls for groups of devices (issue 21): labels, selectors and announcements.

A mixin of ``FleetAdmin`` (api.py): it reuses that class's scoping
(``_tenant``, ``_device``), store mapping (``_guarded``) and call runner, so a
label call is scoped, role-checked and audited exactly like every other call,
and lives apart from the single-device calls.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import grpc

from auth.errors import InvalidIdentifier
from auth.identity import validate_id
from comms.gen import admin_pb2 as apb
from server.access.interceptor import OperatorCall
from server.announce.announcer import Announcer
from server.announce.plan import MAX_PRIORITY
from server.audio.tenant_sounds import SoundChoice, TenantSounds
from server.fleet.device_view import DeviceView
from server.fleet.labels import MAX_KEY, MAX_LABELS, MAX_VALUE, BadLabel, DeviceLabels, Labels, parse_selector
from server.fleet.node import Fleet
from server.operator.calls import ApiError, Note, OperatorCalls

T = TypeVar("T")
AUDIT_TEXT = MAX_VALUE + 8  # a key or value as the audit keeps it (a bad one is cut, never echoed whole)
MAX_TARGET_IDS = 1000  # device ids one announcement may name (a selector reaches any number)
AUDIT_IDS = 100  # device ids per outcome the audit event keeps (the counts are always whole)
NO_TARGETS_TEXT = "name the targets: a selector or device ids, not both"
NO_SOUND_TEXT = "choose the sound: a mode, the name of an uploaded sound or a clip sent with the call"
MAX_CLIP_BYTES = 3 * 1024 * 1024  # a clip sent with Announce (the operator port takes 4 MiB messages)
MAX_CLIP_NAME = 200


def label_protos(labels: Labels) -> list[apb.Label]:
    return [apb.Label(key=key, value=value) for key, value in sorted(labels.items())]


class GroupCalls:
    """Labels, selectors (and the calls built on them) for ``FleetAdmin``."""

    labels: DeviceLabels
    calls: OperatorCalls
    sounds: TenantSounds
    announcer: Announcer
    _fleet: Fleet

    def _tenant(self, call: OperatorCall, requested: str, *, all_allowed: bool = False) -> str | None:
        raise NotImplementedError  # FleetAdmin's

    def _one_tenant(self, call: OperatorCall, requested: str, note: Note) -> str:
        raise NotImplementedError  # FleetAdmin's

    async def _device(self, call: OperatorCall, ref: apb.DeviceRef, note: Note) -> DeviceView:
        raise NotImplementedError  # FleetAdmin's

    async def _guarded(self, work: Awaitable[T]) -> T:
        raise NotImplementedError  # FleetAdmin's

    # --- helpers for the listing calls ----------------------------------------------------

    async def tenant_labels(self, tenants: set[str]) -> dict[str, dict[str, Labels]]:
        return {tenant: await self._guarded(self.labels.of_tenant(tenant)) for tenant in sorted(tenants)}

    async def labelled(self, views: list[DeviceView]) -> list[apb.Device]:
        """``views`` on the wire, each with its labels (one read per tenant)."""
        known = await self.tenant_labels({v.identity.tenant for v in views})
        devices = []
        for view in views:
            device = view.to_proto()
            device.labels.extend(label_protos(known[view.identity.tenant].get(view.identity.device_id, {})))
            devices.append(device)
        return devices

    async def selected(self, views: list[DeviceView], selector_text: str) -> list[DeviceView]:
        """The views whose device matches the selector (INVALID_ARGUMENT for a bad one)."""
        try:
            selector = parse_selector(selector_text)
        except BadLabel as exc:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        if selector.everything:
            return views
        known = await self.tenant_labels({v.identity.tenant for v in views})
        return [v for v in views if selector.matches(known[v.identity.tenant].get(v.identity.device_id, {}))]

    # --- calls -------------------------------------------------------------------------------

    async def SetLabels(self, request: apb.SetLabelsRequest, context: grpc.aio.ServicerContext) -> apb.Device:
        async def work(call: OperatorCall, note: Note) -> apb.Device:
            view = await self._device(call, request.device, note)
            note.parameters["set"] = {
                label.key[:AUDIT_TEXT]: label.value[:AUDIT_TEXT] for label in request.set[: MAX_LABELS + 1]
            }
            note.parameters["remove"] = [key[:AUDIT_TEXT] for key in request.remove[: MAX_LABELS + 1]]
            if len(request.set) > MAX_LABELS or len(request.remove) > MAX_LABELS:
                raise ApiError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"set and remove take at most {MAX_LABELS} labels each (keys of 1..{MAX_KEY} characters)",
                )
            identity = view.identity
            labels = await self._guarded(
                self.labels.change(
                    identity.tenant,
                    identity.device_id,
                    [(label.key, label.value) for label in request.set],
                    list(request.remove),
                )
            )
            device = view.to_proto()
            device.labels.extend(label_protos(labels))
            return device

        return await self.calls.run(context, "SetLabels", work, changes=True)

    async def Announce(
        self, request: apb.AnnounceRequest, context: grpc.aio.ServicerContext
    ) -> apb.AnnounceResult:
        async def work(call: OperatorCall, note: Note) -> apb.AnnounceResult:
            tenant = self._one_tenant(call, request.tenant, note)
            note.parameters.update(priority=request.priority, resume=not request.no_resume)
            if request.priority > MAX_PRIORITY:
                raise ApiError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"priority {request.priority} is outside 0..{MAX_PRIORITY}",
                )
            choice = await self._sound_choice(tenant, request, note)
            devices = await self._targets(tenant, request, note)
            announcement, outcome = await self.announcer.announce(
                tenant, devices, choice, request.priority, not request.no_resume
            )
            note.parameters.update(
                announcement=announcement.id,
                targeted=len(devices),
                **{name: len(ids) for name, ids in outcome.to_data().items()},
                **{f"{name}_ids": ids[:AUDIT_IDS] for name, ids in outcome.to_data().items() if ids},
            )
            return apb.AnnounceResult(
                announcement_id=announcement.id,
                start_unix=announcement.start_at,
                sound=choice.label,
                targeted=len(devices),
                started=outcome.started,
                offline=outcome.offline,
                refused=outcome.refused,
            )

        return await self.calls.run(context, "Announce", work, changes=True)

    async def _sound_choice(self, tenant: str, request: apb.AnnounceRequest, note: Note) -> SoundChoice:
        which = request.WhichOneof("sound")
        if which is None:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, NO_SOUND_TEXT)
        note.parameters["sound"] = {
            "mode": f"mode {request.mode}",
            "sound_name": request.sound_name[:AUDIT_TEXT],
            "clip": f"clip {request.clip_name[:AUDIT_TEXT]!r} ({len(request.clip)} bytes)",
        }[which]
        if len(request.clip_name) > MAX_CLIP_NAME:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT, f"a clip's name is at most {MAX_CLIP_NAME} characters"
            )

        async def choose() -> SoundChoice:
            try:
                if which == "mode":
                    return await self.sounds.choose(tenant, mode=request.mode)
                if which == "clip":
                    return await self.sounds.clip_for_call(
                        tenant, request.clip_name, request.clip, MAX_CLIP_BYTES
                    )
                return await self.sounds.choose(tenant, name=request.sound_name)
            except LookupError as exc:
                raise ApiError(grpc.StatusCode.NOT_FOUND, str(exc)) from None

        choice = await self._guarded(choose())
        note.parameters["sound"] = choice.label
        return choice

    async def _targets(
        self, tenant: str, request: apb.AnnounceRequest | apb.TalkStart, note: Note
    ) -> list[str]:
        """The ids of the tenant's devices the request names (ever seen; live or not)."""
        if bool(request.selector) == bool(request.device_ids):
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, NO_TARGETS_TEXT)
        views = await self._fleet.devices(tenant, lambda record: record.epoch > 0)
        if request.selector:
            note.target = request.selector[:AUDIT_TEXT]
            note.parameters["selector"] = request.selector[:AUDIT_TEXT]
            return [v.identity.device_id for v in await self.selected(views, request.selector)]
        if len(request.device_ids) > MAX_TARGET_IDS:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_TARGET_IDS} device ids; use a selector"
            )
        wanted: list[str] = []
        for device in request.device_ids:
            try:
                validate_id(device, "device id")
            except InvalidIdentifier as exc:
                raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
            if device not in wanted:
                wanted.append(device)
        note.target = ",".join(wanted)[:AUDIT_TEXT]
        note.parameters["devices"] = wanted[:AUDIT_IDS]
        known = {v.identity.device_id for v in views}
        missing = [device for device in wanted if device not in known]
        if missing:
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"device {tenant}/{missing[0]} not found")
        return wanted
