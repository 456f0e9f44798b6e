"""FleetService's enrolment-code methods: create (shown once), list, cancel; role ``operator``.

Part of ``FleetAdmin`` (a mixin, so the scoping and audit are the same as for every other
method): a tenant operator makes codes for its own tenant only, and another tenant's code is
NOT_FOUND like one that does not exist. Creating and cancelling are audited (the code never is:
only its id); the code itself is in the create answer and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from auth.errors import InvalidIdentifier
from auth.identity import MAX_ID_LENGTH, Identity, validate_id
from comms.gen import admin_pb2 as apb
from server.access.interceptor import OperatorCall
from server.fleet.node import Fleet
from server.operator.calls import ApiError, Note, OperatorCalls, not_found
from server.state.enrolment_codes import CodeRecord, EnrolmentCodes
from server.state.enrolment_requests import ClaimCodes, PendingRequests

MAX_COUNT = 1000  # codes one call may create
MIN_TTL_S, MAX_TTL_S = 60.0, 30 * 86_400.0
NOT_ENABLED_TEXT = "enrolment is not enabled on this server (it needs --enroll-bind and an issuing CA)"
_CODE_ID = re.compile(r"^[0-9a-f]{16}$")


@dataclass(frozen=True)
class EnrolmentConfig:
    codes: EnrolmentCodes
    default_ttl_s: float
    ca_fingerprint: Callable[[], str]  # of the CA devices pin when they enrol (follows rotation)
    claim_codes: ClaimCodes  # open enrolment (operator/claims.py)
    requests: PendingRequests


def enrollment_proto(record: CodeRecord, code: str = "") -> apb.Enrollment:
    return apb.Enrollment(
        id=record.id,
        tenant=record.tenant,
        device_id=record.device_id,
        code=code,
        created_unix=record.created_at,
        expires_unix=record.expires_at,
        created_by=record.created_by,
    )


def _invalid(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message)


def requested_devices(request: apb.CreateEnrollmentsRequest) -> list[str]:
    """One device id, or ``count`` ids ``<prefix>1..<prefix><count>``; each a valid id."""
    try:
        if request.device_id:
            if request.count or request.prefix:
                raise _invalid("give device_id, or count with prefix; not both")
            return [validate_id(request.device_id[: MAX_ID_LENGTH + 1], "device id")]
        if not request.count or not request.prefix:
            raise _invalid("give device_id, or count with prefix")
        if request.count > MAX_COUNT:
            raise _invalid(f"count {request.count} is more than {MAX_COUNT}")
        prefix = request.prefix[: MAX_ID_LENGTH + 1]
        return [validate_id(f"{prefix}{n}", "device id") for n in range(1, request.count + 1)]
    except InvalidIdentifier as exc:
        raise _invalid(str(exc)) from None


class EnrolmentAdmin:
    """Mixed into ``FleetAdmin``, which provides the attributes and ``_tenant`` below."""

    calls: OperatorCalls
    _fleet: Fleet
    enrolment: EnrolmentConfig | None = None

    def _tenant(self, call: OperatorCall, requested: str, *, all_allowed: bool = False) -> str | None:
        raise NotImplementedError  # FleetAdmin's

    def _enrolment(self) -> EnrolmentConfig:
        if self.enrolment is None:
            raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, NOT_ENABLED_TEXT)
        return self.enrolment

    def _one_tenant(self, call: OperatorCall, requested: str, note: Note) -> str:
        raise NotImplementedError  # FleetAdmin's

    async def CreateEnrollments(
        self, request: apb.CreateEnrollmentsRequest, context: grpc.aio.ServicerContext
    ) -> apb.CreateEnrollmentsResponse:
        async def work(call: OperatorCall, note: Note) -> apb.CreateEnrollmentsResponse:
            tenant = self._one_tenant(call, request.tenant, note)
            devices = requested_devices(request)
            note.target = devices[0] if len(devices) == 1 else f"{devices[0]}..{devices[-1]}"
            if request.ttl_s and not MIN_TTL_S <= request.ttl_s <= MAX_TTL_S:
                raise _invalid(f"ttl_s must be {MIN_TTL_S:.0f} .. {MAX_TTL_S:.0f} s, not {request.ttl_s:g}")
            config = self._enrolment()  # after the request is understood: its faults come first
            ttl_s = request.ttl_s or config.default_ttl_s
            note.parameters.update({"count": len(devices), "ttl_s": ttl_s})
            for device in devices:
                known = await self._fleet.device(Identity(tenant, device))
                if known is not None and known.record.revoked:
                    raise ApiError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"device {tenant}/{device} is revoked: unrevoke it before enrolling it again",
                    )
            created = []
            for device in devices:
                code, made = await config.codes.create(tenant, device, ttl_s, call.auth.spiffe_id)
                created.append(enrollment_proto(made, code))
            note.parameters["enrollments"] = [e.id for e in created]
            return apb.CreateEnrollmentsResponse(enrollments=created, ca_fingerprint=config.ca_fingerprint())

        return await self.calls.run(context, "CreateEnrollments", work, changes=True)

    async def ListEnrollments(
        self, request: apb.ListEnrollmentsRequest, context: grpc.aio.ServicerContext
    ) -> apb.ListEnrollmentsResponse:
        async def work(call: OperatorCall, note: Note) -> apb.ListEnrollmentsResponse:
            tenant = self._tenant(call, request.tenant, all_allowed=True)
            config = self._enrolment()
            pending = await config.codes.pending(tenant)
            return apb.ListEnrollmentsResponse(enrollments=[enrollment_proto(r) for r in pending])

        return await self.calls.run(context, "ListEnrollments", work, changes=False)

    async def CancelEnrollment(
        self, request: apb.CancelEnrollmentRequest, context: grpc.aio.ServicerContext
    ) -> apb.Enrollment:
        async def work(call: OperatorCall, note: Note) -> apb.Enrollment:
            tenant = self._one_tenant(call, request.tenant, note)
            note.parameters["enrollment"] = request.id[:32]
            if not _CODE_ID.fullmatch(request.id):
                raise _invalid("id must be the 16 hex digits of an enrolment (see ListEnrollments)")
            config = self._enrolment()
            record = await config.codes.cancel(tenant, request.id)
            if record is None:
                raise not_found(f"enrolment {request.id}")
            note.target = record.device_id
            return enrollment_proto(record)

        return await self.calls.run(context, "CancelEnrollment", work, changes=True)
