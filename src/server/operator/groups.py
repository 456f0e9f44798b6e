"""FleetService's calls for groups of devices (issue 21): labels and selectors.

A mixin of ``FleetAdmin`` (api.py): it reuses that class's scoping
(``_tenant``, ``_device``), store mapping (``_guarded``) and call runner, so a
label call is scoped, role-checked and audited exactly like every other call,
and lives apart from the single-device calls.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import grpc

from comms.gen import admin_pb2 as apb
from server.access.interceptor import OperatorCall
from server.fleet.device_view import DeviceView
from server.fleet.labels import MAX_KEY, MAX_LABELS, MAX_VALUE, BadLabel, DeviceLabels, Labels, parse_selector
from server.fleet.node import Fleet
from server.operator.calls import ApiError, Note, OperatorCalls

T = TypeVar("T")
AUDIT_TEXT = MAX_VALUE + 8  # a key or value as the audit keeps it (a bad one is cut, never echoed whole)


def label_protos(labels: Labels) -> list[apb.Label]:
    return [apb.Label(key=key, value=value) for key, value in sorted(labels.items())]


class GroupCalls:
    """Labels, selectors (and the calls built on them) for ``FleetAdmin``."""

    labels: DeviceLabels
    calls: OperatorCalls
    _fleet: Fleet

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
