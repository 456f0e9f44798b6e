"""FleetService's open-enrolment methods: the tenant's claim code and the requests it queues.

Roles (``calls.LEAST_ROLE``): enabling, rotating or disabling the claim code is ``admin``: it
opens (or closes) the tenant's enrolment to anyone holding one shared secret, a policy change
like revoking a device. Seeing the claim code's state, listing the requests and approving or
denying one is ``operator``, as creating a one-time code is: an operator who can make a code for
any device id gains nothing more by approving a request. Another tenant's request is NOT_FOUND,
like one that does not exist. Decisions are audited with the request id, the key fingerprint
and the device id; the claim code itself only ever appears in the SetClaimCode answer.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import grpc

from auth.errors import InvalidIdentifier
from auth.identity import MAX_ID_LENGTH, Identity, validate_id
from comms.gen import admin_pb2 as apb
from server.access.interceptor import OperatorCall
from server.fleet.node import Fleet
from server.operator.calls import ApiError, Note, OperatorCalls, not_found
from server.operator.enrolments import EnrolmentConfig
from server.state.enrolment_requests import APPROVED, DENIED, PENDING, ClaimRecord, PendingRecord

_REQUEST_ID = re.compile(r"^[0-9a-f]{16}$")
DECIDED_TEXT = "enrolment request {id} was {state} already"


def claim_proto(tenant: str, record: ClaimRecord | None, fingerprint: str, code: str = "") -> apb.ClaimCode:
    if record is None:
        return apb.ClaimCode(tenant=tenant, enabled=False, ca_fingerprint=fingerprint)
    return apb.ClaimCode(
        tenant=record.tenant,
        enabled=True,
        id=record.id,
        code=code,
        created_unix=record.created_at,
        created_by=record.created_by,
        ca_fingerprint=fingerprint,
    )


def pending_proto(record: PendingRecord, known: bool = False) -> apb.PendingEnrollment:
    return apb.PendingEnrollment(
        id=record.id,
        tenant=record.tenant,
        proposed_device_id=record.proposed_id,
        key_fingerprint=record.fingerprint,
        peer=record.peer,
        created_unix=record.created_at,
        expires_unix=record.expires_at,
        state=record.state,
        device_id=record.device_id,
        decided_by=record.decided_by,
        proposed_id_known=known,
    )


class ClaimAdmin:
    """Mixed into ``FleetAdmin`` beside ``EnrolmentAdmin`` (whose helpers it uses)."""

    calls: OperatorCalls
    _fleet: Fleet

    if TYPE_CHECKING:  # provided by EnrolmentAdmin and FleetAdmin

        def _one_tenant(self, call: OperatorCall, requested: str, note: Note) -> str: ...
        def _enrolment(self) -> EnrolmentConfig: ...
        def _tenant(self, call: OperatorCall, requested: str, *, all_allowed: bool = False) -> str | None: ...

    async def GetClaimCode(
        self, request: apb.ClaimCodeRequest, context: grpc.aio.ServicerContext
    ) -> apb.ClaimCode:
        async def work(call: OperatorCall, note: Note) -> apb.ClaimCode:
            tenant = self._one_tenant(call, request.tenant, note)
            config = self._enrolment()
            record = await config.claim_codes.current(tenant)
            return claim_proto(tenant, record, config.ca_fingerprint())

        return await self.calls.run(context, "GetClaimCode", work, changes=False)

    async def SetClaimCode(
        self, request: apb.ClaimCodeRequest, context: grpc.aio.ServicerContext
    ) -> apb.ClaimCode:
        async def work(call: OperatorCall, note: Note) -> apb.ClaimCode:
            tenant = self._one_tenant(call, request.tenant, note)
            config = self._enrolment()
            previous = await config.claim_codes.current(tenant)
            code, record = await config.claim_codes.set(tenant, call.auth.spiffe_id)
            note.parameters.update({"claim_code": record.id, "replaced": previous.id if previous else ""})
            return claim_proto(tenant, record, config.ca_fingerprint(), code)

        return await self.calls.run(context, "SetClaimCode", work, changes=True)

    async def DisableClaimCode(
        self, request: apb.ClaimCodeRequest, context: grpc.aio.ServicerContext
    ) -> apb.ClaimCode:
        async def work(call: OperatorCall, note: Note) -> apb.ClaimCode:
            tenant = self._one_tenant(call, request.tenant, note)
            config = self._enrolment()
            gone = await config.claim_codes.disable(tenant)
            if gone is None:
                raise not_found(f"claim code of tenant {tenant}")
            note.parameters["claim_code"] = gone.id
            return claim_proto(tenant, None, config.ca_fingerprint())

        return await self.calls.run(context, "DisableClaimCode", work, changes=True)

    async def ListPendingEnrollments(
        self, request: apb.ClaimCodeRequest, context: grpc.aio.ServicerContext
    ) -> apb.ListPendingEnrollmentsResponse:
        async def work(call: OperatorCall, note: Note) -> apb.ListPendingEnrollmentsResponse:
            tenant = self._tenant(call, request.tenant, all_allowed=True)
            config = self._enrolment()
            listed = await config.requests.listed(tenant)
            shown = []
            for record in listed:  # a proposed id already in the fleet is worth a second look
                known = await self._fleet.device(Identity(record.tenant, record.proposed_id)) is not None
                shown.append(pending_proto(record, known))
            return apb.ListPendingEnrollmentsResponse(requests=shown)

        return await self.calls.run(context, "ListPendingEnrollments", work, changes=False)

    async def _decide(
        self, request: apb.DecideEnrollmentRequest, call: OperatorCall, note: Note, state: str
    ) -> apb.PendingEnrollment:
        tenant = self._one_tenant(call, request.tenant, note)
        note.parameters["request"] = request.id[:32]
        if not _REQUEST_ID.fullmatch(request.id):
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "id must be the 16 hex digits of an enrolment request (see ListPendingEnrollments)",
            )
        device_id = ""
        if state == APPROVED and request.device_id:
            device_id = self._device_id(request.device_id)
        elif state == DENIED and request.device_id:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "a denial names no device id")
        config = self._enrolment()
        record = await config.requests.get(request.id)
        if record is None or record.tenant != tenant or record.expired(config.requests.now()):
            raise not_found(f"enrolment request {request.id}")
        note.parameters["fingerprint"] = record.fingerprint
        if record.state != PENDING:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION, DECIDED_TEXT.format(id=record.id, state=record.state)
            )
        if state == APPROVED:
            device_id = device_id or record.proposed_id
            known = await self._fleet.device(Identity(tenant, device_id))
            if known is not None and known.record.revoked:
                raise ApiError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"device {tenant}/{device_id} is revoked: unrevoke it before enrolling it again",
                )
        note.target = device_id or record.proposed_id
        decided = await config.requests.decide(tenant, request.id, state, device_id, call.auth.spiffe_id)
        if decided is None:  # decided (or expired) between the two reads
            raise not_found(f"enrolment request {request.id}")
        return pending_proto(decided)

    @staticmethod
    def _device_id(text: str) -> str:
        try:
            return validate_id(text[: MAX_ID_LENGTH + 1], "device id")
        except InvalidIdentifier as exc:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None

    async def ApproveEnrollment(
        self, request: apb.DecideEnrollmentRequest, context: grpc.aio.ServicerContext
    ) -> apb.PendingEnrollment:
        async def work(call: OperatorCall, note: Note) -> apb.PendingEnrollment:
            return await self._decide(request, call, note, APPROVED)

        return await self.calls.run(context, "ApproveEnrollment", work, changes=True)

    async def DenyEnrollment(
        self, request: apb.DecideEnrollmentRequest, context: grpc.aio.ServicerContext
    ) -> apb.PendingEnrollment:
        async def work(call: OperatorCall, note: Note) -> apb.PendingEnrollment:
            return await self._decide(request, call, note, DENIED)

        return await self.calls.run(context, "DenyEnrollment", work, changes=True)
