"""EnrollmentService: a one-time code and a CSR in, a device certificate chain out.

Served on a listener of its own with server-only TLS (the device has no certificate yet),
never on the mTLS device port. The certificate's identity is the code's record, nothing the
CSR says. Order matters: the CSR and the issuing CA are checked *before* the code is taken,
so a malformed request never burns a code; taking the code is the store's atomic step, so of
two devices racing one code exactly one gets a certificate. Every outcome is counted
(``audio_enrolments_total{result}``) and audited (action ``Enroll``, ``Claim`` or ``Poll``), except
the attempts of an address already refused for too many failures: those are counted, and audited
once when the address is blocked, so a flood cannot push real events out of the audit log. Open
enrolment with approval (``Claim``, ``Poll``) is ``claims.py``; it shares this wrapper: the same
limits, refusals in our words, counting and audit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from auth import pki
from auth.csr import CsrRejected, device_public_key
from auth.errors import PkiError
from auth.identity import Identity
from auth.issuing_ca import chain_pem, issue_for_key
from comms.gen import enroll_pb2 as epb
from comms.gen import enroll_pb2_grpc as epb_grpc
from server import metrics
from server.enrolment.attempts import FailedAttempts
from server.errors import STORE_UNAVAILABLE_TEXT, StoreUnavailable, abort
from server.operator.audit import AuditEvent, AuditLog
from server.state.enrolment_codes import CodeRecord, EnrolmentCodes, normalise

if TYPE_CHECKING:
    from server.enrolment.claims import ClaimDesk

log = logging.getLogger(__name__)

T = TypeVar("T")
ACTION = "Enroll"
CODE_FORM_TEXT = "enrolment code is not of the form XXXX-XXXX-XXXX-XXXX"
CODE_INVALID_TEXT = "enrolment code is not valid (unknown, already used or cancelled)"
CODE_EXPIRED_TEXT = "enrolment code has expired: ask an operator for a new one"
TOO_MANY_TEXT = "too many failed enrolment attempts from this address: wait a minute"
NO_ISSUER_TEXT = "enrolment is not available on this server right now; the server logged why"
INTERNAL_TEXT = "internal error; the server logged the details"
OPEN_OFF_TEXT = "open enrolment is not served here"
GUESSING = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND)


@dataclass(frozen=True)
class IssuingFiles:
    """Where the issuing CA and the CA bundle are; read for each enrolment (a rotated Secret is
    used from the next one on, with no reload machinery), checked at start-up."""

    cert: Path
    key: Path
    ca_bundle: Path

    def load(self) -> tuple[pki.CertifiedKey, bytes]:
        issuing = pki.load_certified_key(self.cert, self.key)
        try:
            bundle = self.ca_bundle.read_bytes()
        except OSError as exc:
            raise PkiError(f"cannot read the CA bundle {self.ca_bundle}: {type(exc).__name__}") from None
        return issuing, bundle


@dataclass
class Audited:
    """What the audit event of an attempt says besides its outcome (filled in as it is understood)."""

    tenant: str = ""
    target: str = ""
    parameters: dict[str, object] = field(default_factory=dict)

    @classmethod
    def of(cls, record: CodeRecord | None) -> Audited:
        if record is None:
            return cls()
        return cls(record.tenant, record.device_id, {"enrollment": record.id})


class Refused(Exception):
    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        audited: Audited | None = None,
        *,
        quiet: bool = False,
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.audited = audited or Audited()
        self.quiet = quiet  # counted, not audited (audited once when the limit was reached)


class Enrolment(epb_grpc.EnrollmentServiceServicer):
    def __init__(
        self,
        codes: EnrolmentCodes,
        audit: AuditLog,
        files: IssuingFiles,
        trust_domain: str,
        lifetime: dt.timedelta,
        attempts: FailedAttempts,
        desk: ClaimDesk | None = None,
    ) -> None:
        self._codes = codes
        self._audit = audit
        self._files = files
        self._trust_domain = trust_domain
        self._lifetime = lifetime
        self._attempts = attempts
        self.desk = desk

    async def Enroll(
        self, request: epb.EnrollRequest, context: grpc.aio.ServicerContext
    ) -> epb.EnrollResponse:
        return await self.answer(context, ACTION, lambda address: self._enrol(request, address))

    async def Claim(self, request: epb.ClaimRequest, context: grpc.aio.ServicerContext) -> epb.ClaimResponse:
        desk = self.desk
        if desk is None:
            await abort(context, grpc.StatusCode.UNIMPLEMENTED, OPEN_OFF_TEXT)
        return await self.answer(context, "Claim", lambda address: desk.claim(request, address))

    async def Poll(self, request: epb.PollRequest, context: grpc.aio.ServicerContext) -> epb.PollResponse:
        desk = self.desk
        if desk is None:
            await abort(context, grpc.StatusCode.UNIMPLEMENTED, OPEN_OFF_TEXT)
        return await self.answer(context, "Poll", lambda address: desk.poll(request, address))

    async def answer(
        self, context: grpc.aio.ServicerContext, action: str, work: Callable[[str], Awaitable[T]]
    ) -> T:
        """Run one attempt from the caller's address: refusals counted, audited, in our words."""
        address = str(context.peer()).rpartition(":")[0]
        if self._attempts.blocked(address):
            metrics.ENROLMENTS.labels(result="too_many_failures").inc()
            await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_MANY_TEXT)
        try:
            return await work(address)
        except Refused as refused:
            await self.refused(refused, address, action)
            await abort(context, refused.code, refused.message)
        except StoreUnavailable:
            await self.refused(
                Refused(grpc.StatusCode.UNAVAILABLE, "store_unavailable", STORE_UNAVAILABLE_TEXT),
                address,
                action,
            )
            await abort(context, grpc.StatusCode.UNAVAILABLE, STORE_UNAVAILABLE_TEXT)
        except Exception:  # a bug: the story in our log, our words on the wire
            log.exception("enrol.internal_error", extra={"peer": address, "action": action})
            metrics.ENROLMENTS.labels(result="internal").inc()
            await abort(context, grpc.StatusCode.INTERNAL, INTERNAL_TEXT)

    async def issuer(self) -> tuple[pki.CertifiedKey, bytes]:
        """The issuing CA and the CA bundle, read now (a rotated Secret is used from now on)."""
        try:
            return await asyncio.to_thread(self._files.load)
        except PkiError as exc:
            log.error("enrol.no_issuing_ca", extra={"error": str(exc)})
            raise Refused(grpc.StatusCode.UNAVAILABLE, "no_issuing_ca", NO_ISSUER_TEXT) from None

    def issue(
        self, issuing: pki.CertifiedKey, public_key: ec.EllipticCurvePublicKey, identity: Identity
    ) -> x509.Certificate:
        return issue_for_key(issuing, public_key, identity, self._trust_domain, self._lifetime)

    async def _enrol(self, request: epb.EnrollRequest, address: str) -> epb.EnrollResponse:
        normalised = normalise(request.code[:64])
        if normalised is None:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "code_malformed", CODE_FORM_TEXT)
        try:
            public_key = device_public_key(request.csr)
        except CsrRejected as exc:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "csr_invalid", str(exc)) from None
        issuing, bundle = await self.issuer()
        record = await self._codes.take(normalised)  # from here on the code is used, whatever follows
        if record is None:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "code_invalid", CODE_INVALID_TEXT)
        if record.expired(self._codes.now()):
            raise Refused(
                grpc.StatusCode.UNAUTHENTICATED, "code_expired", CODE_EXPIRED_TEXT, Audited.of(record)
            )
        identity = Identity(record.tenant, record.device_id)
        return await self.issue_answer(
            ACTION, Audited.of(record), identity, public_key, (issuing, bundle), address, enrollment=record.id
        )

    async def issue_answer(
        self,
        action: str,
        audited: Audited,
        identity: Identity,
        public_key: ec.EllipticCurvePublicKey,
        issuer: tuple[pki.CertifiedKey, bytes],
        address: str,
        enrollment: str = "",
        request: str = "",
    ) -> epb.EnrollResponse:
        """Issue ``identity``'s certificate and answer with it: audited, counted and logged once,
        the same way for a one-time code (``enrollment``) and an approved claim (``request``)."""
        issuing, bundle = issuer
        cert = self.issue(issuing, public_key, identity)
        audited.parameters["serial"] = f"{cert.serial_number:x}"
        await self.record(action, audited, grpc.StatusCode.OK, "", address)
        metrics.ENROLMENTS.labels(result="ok").inc()
        log.info(
            "enrol.issued",
            extra={
                "tenant": identity.tenant,
                "device": identity.device_id,
                "enrollment": enrollment,
                "request": request,
                "serial": f"{cert.serial_number:x}",
                "not_after": cert.not_valid_after_utc.isoformat(),
                "peer": address,
            },
        )
        return epb.EnrollResponse(
            certificate_chain=chain_pem(cert, issuing.cert),
            ca_bundle=bundle,
            tenant=identity.tenant,
            device_id=identity.device_id,
        )

    async def refused(self, refused: Refused, address: str, action: str) -> None:
        metrics.ENROLMENTS.labels(result=refused.reason).inc()
        guessing = refused.code in GUESSING
        now_blocked = self._attempts.failed(address) if guessing else False
        refused.audited.parameters["reason"] = refused.reason
        if not refused.quiet:
            await self.record(action, refused.audited, refused.code, refused.message, address)
        if now_blocked:
            blocked = Audited(parameters={"reason": "too_many_failures"})
            await self.record(action, blocked, grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_MANY_TEXT, address)

    async def record(
        self, action: str, audited: Audited, code: grpc.StatusCode, message: str, address: str
    ) -> None:
        await self._audit.record(
            AuditEvent(
                operator="",  # a device without a certificate yet: the code is all it has
                role="device",
                tenant=audited.tenant,
                action=action,
                target=audited.target,
                parameters={"peer": address, **audited.parameters},
                result=code.name,
                message=message,
            )
        )
