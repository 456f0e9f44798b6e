"""EnrollmentService: a one-time code and a CSR in, a device certificate chain out.

Served on a listener of its own with server-only TLS (the device has no certificate yet),
never on the mTLS device port. The certificate's identity is the code's record, nothing the
CSR says. Order matters: the CSR and the issuing CA are checked *before* the code is taken,
so a malformed request never burns a code; taking the code is the store's atomic step, so of
two devices racing one code exactly one gets a certificate. Every outcome is counted
(``audio_enrolments_total{result}``) and audited (action ``Enroll``), except the attempts of an
address already refused for too many failures: those are counted, and audited once when the
address is blocked, so a flood cannot push real events out of the audit log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

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

log = logging.getLogger(__name__)

ACTION = "Enroll"
CODE_FORM_TEXT = "enrolment code is not of the form XXXX-XXXX-XXXX-XXXX"
CODE_INVALID_TEXT = "enrolment code is not valid (unknown, already used or cancelled)"
CODE_EXPIRED_TEXT = "enrolment code has expired: ask an operator for a new one"
TOO_MANY_TEXT = "too many failed enrolment attempts from this address: wait a minute"
NO_ISSUER_TEXT = "enrolment is not available on this server right now; the server logged why"
INTERNAL_TEXT = "internal error; the server logged the details"


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


class Refused(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str, message: str, record: CodeRecord | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.record = code, reason, message, record


class Enrolment(epb_grpc.EnrollmentServiceServicer):
    def __init__(
        self,
        codes: EnrolmentCodes,
        audit: AuditLog,
        files: IssuingFiles,
        trust_domain: str,
        lifetime: dt.timedelta,
        attempts: FailedAttempts,
    ) -> None:
        self._codes = codes
        self._audit = audit
        self._files = files
        self._trust_domain = trust_domain
        self._lifetime = lifetime
        self._attempts = attempts

    async def Enroll(
        self, request: epb.EnrollRequest, context: grpc.aio.ServicerContext
    ) -> epb.EnrollResponse:
        address = str(context.peer()).rpartition(":")[0]
        if self._attempts.blocked(address):
            metrics.ENROLMENTS.labels(result="too_many_failures").inc()
            await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_MANY_TEXT)
        try:
            return await self._enrol(request, address)
        except Refused as refused:
            await self._refused(refused, address)
            await abort(context, refused.code, refused.message)
        except StoreUnavailable:
            await self._refused(
                Refused(grpc.StatusCode.UNAVAILABLE, "store_unavailable", STORE_UNAVAILABLE_TEXT), address
            )
            await abort(context, grpc.StatusCode.UNAVAILABLE, STORE_UNAVAILABLE_TEXT)
        except Exception:  # a bug: the story in our log, our words on the wire
            log.exception("enrol.internal_error", extra={"peer": address})
            metrics.ENROLMENTS.labels(result="internal").inc()
            await abort(context, grpc.StatusCode.INTERNAL, INTERNAL_TEXT)

    async def _enrol(self, request: epb.EnrollRequest, address: str) -> epb.EnrollResponse:
        normalised = normalise(request.code[:64])
        if normalised is None:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "code_malformed", CODE_FORM_TEXT)
        try:
            public_key = device_public_key(request.csr)
        except CsrRejected as exc:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "csr_invalid", str(exc)) from None
        try:
            issuing, bundle = await asyncio.to_thread(self._files.load)
        except PkiError as exc:
            log.error("enrol.no_issuing_ca", extra={"error": str(exc)})
            raise Refused(grpc.StatusCode.UNAVAILABLE, "no_issuing_ca", NO_ISSUER_TEXT) from None
        record = await self._codes.take(normalised)  # from here on the code is used, whatever follows
        if record is None:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "code_invalid", CODE_INVALID_TEXT)
        if record.expired(self._codes.now()):
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "code_expired", CODE_EXPIRED_TEXT, record)
        identity = Identity(record.tenant, record.device_id)
        cert = issue_for_key(issuing, public_key, identity, self._trust_domain, self._lifetime)
        await self._record(record, grpc.StatusCode.OK, "", address, serial=f"{cert.serial_number:x}")
        metrics.ENROLMENTS.labels(result="ok").inc()
        log.info(
            "enrol.issued",
            extra={
                "tenant": identity.tenant,
                "device": identity.device_id,
                "enrollment": record.id,
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

    async def _refused(self, refused: Refused, address: str) -> None:
        metrics.ENROLMENTS.labels(result=refused.reason).inc()
        guessing = refused.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED)
        now_blocked = self._attempts.failed(address) if guessing else False
        await self._record(refused.record, refused.code, refused.message, address, reason=refused.reason)
        if now_blocked:
            await self._record(
                None,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                TOO_MANY_TEXT,
                address,
                reason="too_many_failures",
            )

    async def _record(
        self, record: CodeRecord | None, code: grpc.StatusCode, message: str, address: str, **extra: str
    ) -> None:
        parameters: dict[str, object] = {"peer": address, **extra}
        if record is not None:
            parameters["enrollment"] = record.id
        await self._audit.record(
            AuditEvent(
                operator="",  # a device without a certificate yet: the code is all it has
                role="device",
                tenant=record.tenant if record else "",
                action=ACTION,
                target=record.device_id if record else "",
                parameters=parameters,
                result=code.name,
                message=message,
            )
        )
