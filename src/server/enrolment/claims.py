"""Open enrolment with approval: ``Claim`` queues a request with the tenant's claim code, ``Poll``
collects the operator's decision.

The claim code says only which tenant's queue a request joins; the device's proposed id is a
suggestion shown to the operator. The certificate's identity is the tenant of the claim code and
the device id of the approval, nothing the device sent. Requests are capped per tenant
(``pending_cap``) and each address may make only ``claims_per_min`` claims with a good code a
minute (refused ones too: a full queue must not become a way to flood the audit log). A poll must be
signed with the key of the claim's CSR (``auth.poll_proof``): the request id is no secret, the
key is. An approved request is taken from the store by the poll that collects it (so exactly one
certificate is issued per approval), a denied one by the poll that learns of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from auth import poll_proof
from auth.csr import CsrRejected, device_public_key
from auth.errors import InvalidIdentifier
from auth.identity import MAX_ID_LENGTH, Identity, validate_id
from comms.gen import enroll_pb2 as epb
from server import metrics
from server.enrolment.attempts import PerAddress
from server.enrolment.service import CODE_FORM_TEXT, Audited, Enrolment, Refused
from server.state.enrolment_codes import normalise
from server.state.enrolment_requests import APPROVED, DENIED, ClaimCodes, PendingRecord, PendingRequests

log = logging.getLogger(__name__)

REQUEST_ID_CHARS = 16
CLAIM_INVALID_TEXT = "claim code is not valid (unknown, rotated or disabled)"
PENDING_FULL_TEXT = "this tenant has too many enrolment requests waiting for approval: try again later"
CLAIMS_LIMITED_TEXT = "too many enrolment requests from this address: wait a minute"
REQUEST_UNKNOWN_TEXT = "no such enrolment request (unknown, collected or expired): claim again"
REQUEST_EXPIRED_TEXT = "the enrolment request expired before an operator decided: claim again"
PROOF_INVALID_TEXT = "the poll is not signed with the key of the enrolment request"
DENIED_TEXT = "an operator denied this enrolment request"
DEVICE_ID_TEXT = "proposed device id: "


@dataclass(frozen=True)
class OpenEnrolment:
    """The limits of open enrolment (settings ``enroll_pending_*``, ``enroll_claims_per_min``)."""

    pending_ttl_s: float
    pending_cap: int
    poll_interval_s: float


class ClaimDesk:
    def __init__(
        self,
        service: Enrolment,
        claim_codes: ClaimCodes,
        requests: PendingRequests,
        limits: OpenEnrolment,
        claims: PerAddress,
    ) -> None:
        self._service = service
        self._claim_codes = claim_codes
        self._requests = requests
        self._limits = limits
        self._claims = claims

    async def claim(self, request: epb.ClaimRequest, address: str) -> epb.ClaimResponse:
        audited = Audited(target=request.proposed_device_id[:MAX_ID_LENGTH])
        if self._claims.blocked(address):
            code = grpc.StatusCode.RESOURCE_EXHAUSTED
            raise Refused(code, "claims_rate_limited", CLAIMS_LIMITED_TEXT, audited, quiet=True)
        normalised = normalise(request.claim_code[:64])
        if normalised is None:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "code_malformed", CODE_FORM_TEXT, audited)
        try:
            proposed = validate_id(request.proposed_device_id[: MAX_ID_LENGTH + 1], "device id")
        except InvalidIdentifier as exc:
            message = DEVICE_ID_TEXT + str(exc)
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "device_id_invalid", message, audited) from None
        try:
            public_key = device_public_key(request.csr)
        except CsrRejected as exc:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "csr_invalid", str(exc), audited) from None
        claim = await self._claim_codes.lookup(normalised)
        if claim is None:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "claim_invalid", CLAIM_INVALID_TEXT, audited)
        audited.tenant = claim.tenant
        audited.parameters["claim_code"] = claim.id
        fingerprint = poll_proof.key_fingerprint(public_key)
        audited.parameters["fingerprint"] = fingerprint
        limits = self._limits
        now_blocked = self._claims.count(address)  # every claim with a good code, stored or not
        record = await self._requests.add(
            claim.tenant,
            proposed,
            poll_proof.public_der(public_key),
            fingerprint,
            address,
            limits.pending_ttl_s,
            limits.pending_cap,
        )
        if record is None:
            refused = Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "pending_full", PENDING_FULL_TEXT, audited)
        else:
            audited.parameters["request"] = record.id
            await self._service.record("Claim", audited, grpc.StatusCode.OK, "", address)
            metrics.ENROLMENTS.labels(result="pending").inc()
        if now_blocked:  # audited once: the claims after this one, for a minute, are refused
            blocked = Audited(claim.tenant, proposed, {"reason": "claims_rate_limited"})
            code = grpc.StatusCode.RESOURCE_EXHAUSTED
            await self._service.record("Claim", blocked, code, CLAIMS_LIMITED_TEXT, address)
        if record is None:
            raise refused
        log.info(
            "enrol.claimed",
            extra={"tenant": claim.tenant, "proposed": proposed, "request": record.id, "peer": address},
        )
        return epb.ClaimResponse(
            request_id=record.id,
            tenant=record.tenant,
            key_fingerprint=fingerprint,
            expires_unix=record.expires_at,
            retry_after_s=limits.poll_interval_s,
        )

    async def poll(self, request: epb.PollRequest, address: str) -> epb.PollResponse:
        request_id = request.request_id[: REQUEST_ID_CHARS + 1]
        audited = Audited(parameters={"request": request_id})
        record = await self._requests.get(request_id) if len(request_id) == REQUEST_ID_CHARS else None
        if record is None:
            raise Refused(grpc.StatusCode.NOT_FOUND, "request_unknown", REQUEST_UNKNOWN_TEXT, audited)
        audited.tenant, audited.target = record.tenant, record.device_id or record.proposed_id
        if not poll_proof.verifies(record.public_der(), request_id, request.signature):
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "proof_invalid", PROOF_INVALID_TEXT, audited)
        if record.expired(self._requests.now()):
            await self._requests.take(request_id)
            raise Refused(grpc.StatusCode.NOT_FOUND, "request_expired", REQUEST_EXPIRED_TEXT, audited)
        if record.state == DENIED:
            await self._requests.take(request_id)
            audited.parameters["decided_by"] = record.decided_by
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, "denied", DENIED_TEXT, audited)
        if record.state != APPROVED:
            return epb.PollResponse(
                state=epb.PollResponse.PENDING, retry_after_s=self._limits.poll_interval_s
            )
        return epb.PollResponse(
            state=epb.PollResponse.ISSUED, issued=await self._collect(record, audited, address)
        )

    async def _collect(self, record: PendingRecord, audited: Audited, address: str) -> epb.EnrollResponse:
        issuing, bundle = await self._service.issuer()  # before the approval is used up
        taken = await self._requests.take(record.id)
        if taken is None or taken.state != APPROVED:  # another poll with the same key won the race
            raise Refused(grpc.StatusCode.NOT_FOUND, "request_unknown", REQUEST_UNKNOWN_TEXT, audited)
        identity = Identity(taken.tenant, taken.device_id)  # the claim code's tenant, the approval's id
        public_key = serialization.load_der_public_key(taken.public_der())
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        audited.parameters["approved_by"] = taken.decided_by
        return await self._service.issue_answer(
            "Poll", audited, identity, public_key, (issuing, bundle), address, request=taken.id
        )
