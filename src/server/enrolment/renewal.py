"""RenewalService: a device with a valid certificate and session trades a CSR for a new certificate.

Served on the mTLS device port: the handshake proves the current certificate, the interceptor
checks it (profile, chain, CRL) and lists ``Renew`` as mTLS-only so that the session token is
checked *here*, where a refusal is counted (``audio_renewals_total{result}``) and audited
(action ``Renew``) like every other outcome: the token must verify, be bound to this very
certificate, name the device's current session, and the device must not be on the operator
deny-list. The identity of the new certificate is the authenticated peer's, never the CSR's; a
CSR that asks for another name, reuses the current key, or does not check out is refused. The
new certificate comes from the issuing CA (files read per call, like enrolment) for
``--device-cert-lifetime-s``, is on the device's record (serial, notBefore, notAfter, when)
before the device gets it, and comes with a token of the same session bound to it, so the device
moves its streams without a new session.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import NoReturn

import grpc

from auth.csr import CsrForeignName, CsrKeyReused, CsrRejected, renewal_public_key
from auth.errors import AuthError, PkiError
from auth.issuing_ca import chain_pem, issue_for_key
from auth.tokens import bearer_token, certificate_thumbprint, issue_token
from comms.gen import renew_pb2 as rpb
from comms.gen import renew_pb2_grpc as rpb_grpc
from server import metrics
from server.access.authn import Authenticator, CallAuth
from server.access.interceptor import current_auth, rejection
from server.access.trust import TrustState
from server.devices.registry import DeviceRegistry
from server.enrolment.service import IssuingFiles
from server.errors import STORE_UNAVAILABLE_TEXT, StoreUnavailable, abort
from server.operator.audit import AuditEvent, AuditLog
from server.state.store import Renewal

log = logging.getLogger(__name__)

RENEW_METHOD = "/audio.renew.v1.RenewalService/Renew"
ACTION = "Renew"
EXPIRED_TEXT = (
    "device certificate has expired: an expired certificate cannot renew; enrol the device again "
    "with a new code"
)
NO_ISSUER_TEXT = "renewal is not available on this server right now; the server logged why"
INTERNAL_TEXT = "internal error; the server logged the details"


class Refused(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


class Renewals(rpb_grpc.RenewalServiceServicer):
    def __init__(
        self,
        registry: DeviceRegistry,
        authenticator: Authenticator,
        trust: TrustState,
        audit: AuditLog,
        files: IssuingFiles,
        trust_domain: str,
        lifetime: dt.timedelta,
    ) -> None:
        self._registry = registry
        self._authenticator = authenticator
        self._trust = trust
        self._audit = audit
        self._files = files
        self._trust_domain = trust_domain
        self._lifetime = lifetime

    async def Renew(self, request: rpb.RenewRequest, context: grpc.aio.ServicerContext) -> rpb.RenewResponse:
        peer = current_auth()  # the certificate, checked by the interceptor (mTLS-only method)
        try:
            return await self._renew(peer, request, context)
        except Refused as refused:
            await self._refused(peer, refused, context)
        except StoreUnavailable:
            await self._refused(
                peer,
                Refused(grpc.StatusCode.UNAVAILABLE, "store_unavailable", STORE_UNAVAILABLE_TEXT),
                context,
            )
        except Exception:  # a bug: the story in our log, our words on the wire
            log.exception(
                "renew.internal_error",
                extra={
                    "tenant": peer.identity.tenant,
                    "device": peer.identity.device_id,
                    "cert_serial": f"{peer.cert_serial:x}",
                },
            )
            metrics.RENEWALS.labels(result="internal").inc()
            await abort(context, grpc.StatusCode.INTERNAL, INTERNAL_TEXT)

    async def _renew(
        self, peer: CallAuth, request: rpb.RenewRequest, context: grpc.aio.ServicerContext
    ) -> rpb.RenewResponse:
        try:
            auth = await self._authenticator.session(peer, bearer_token(context.invocation_metadata()))
        except AuthError as exc:
            rejected = rejection(exc)
            raise Refused(rejected.code, str(rejected.reason), rejected.message) from None
        if auth.cert_expires <= time.time():  # TLS refuses it first; never issue from one anyway
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "certificate_expired", EXPIRED_TEXT)
        own_uri = auth.identity.spiffe_id(self._trust_domain)
        try:
            public_key = renewal_public_key(request.csr, own_uri, auth.public_key)
        except CsrForeignName as exc:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, "csr_foreign_name", str(exc)) from None
        except CsrKeyReused as exc:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "csr_key_reused", str(exc)) from None
        except CsrRejected as exc:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "csr_invalid", str(exc)) from None
        try:
            issuing, bundle = await asyncio.to_thread(self._files.load)
        except PkiError as exc:
            log.error(
                "renew.no_issuing_ca",
                extra={
                    "tenant": peer.identity.tenant,
                    "device": peer.identity.device_id,
                    "cert_serial": f"{peer.cert_serial:x}",
                    "error": str(exc),
                },
            )
            raise Refused(grpc.StatusCode.UNAVAILABLE, "no_issuing_ca", NO_ISSUER_TEXT) from None
        cert = issue_for_key(issuing, public_key, auth.identity, self._trust_domain, self._lifetime)
        renewal = Renewal(
            cert.serial_number,
            cert.not_valid_before_utc.timestamp(),
            cert.not_valid_after_utc.timestamp(),
            time.time(),
        )
        await self._registry.renewed(auth.identity, renewal)  # on record before the device has it
        assert auth.session_id is not None and auth.claims is not None
        issued = issue_token(
            self._trust.keys,
            self._trust.policy,
            auth.identity,
            auth.session_id,
            certificate_thumbprint(cert),
            frame_ms=auth.claims.frame_ms,
        )
        serial = f"{cert.serial_number:x}"
        metrics.RENEWALS.labels(result="ok").inc()
        await self._record(auth, grpc.StatusCode.OK, "", previous=f"{peer.cert_serial:x}", serial=serial)
        log.info(
            "renew.issued",
            extra={
                "tenant": peer.identity.tenant,
                "device": peer.identity.device_id,
                "cert_serial": f"{peer.cert_serial:x}",
                "serial": serial,
                "previous": f"{peer.cert_serial:x}",
                "not_after": cert.not_valid_after_utc.isoformat(),
            },
        )
        return rpb.RenewResponse(
            certificate_chain=chain_pem(cert, issuing.cert),
            ca_bundle=bundle,
            token=issued.token,
            session_id=issued.session_id,
            expires_at_unix=issued.expires_at,
            refresh_after_unix=issued.refresh_after,
        )

    async def _refused(self, peer: CallAuth, refused: Refused, context: grpc.aio.ServicerContext) -> NoReturn:
        metrics.RENEWALS.labels(result=refused.reason).inc()
        log.warning(
            "renew.refused",
            extra={
                "tenant": peer.identity.tenant,
                "device": peer.identity.device_id,
                "cert_serial": f"{peer.cert_serial:x}",
                "reason": refused.reason,
                "code": refused.code.name,
            },
        )
        await self._record(peer, refused.code, refused.message, reason=refused.reason)
        if refused.reason != "store_unavailable":
            await self._registry.renewal_failed(peer.identity, refused.reason)
        await abort(context, refused.code, refused.message)

    async def _record(self, peer: CallAuth, code: grpc.StatusCode, message: str, **extra: str) -> None:
        await self._audit.record(
            AuditEvent(
                operator="",  # a device, known by its certificate
                role="device",
                tenant=peer.identity.tenant,
                action=ACTION,
                target=peer.identity.device_id,
                parameters={"cert_serial": f"{peer.cert_serial:x}", **extra},
                result=code.name,
                message=message,
            )
        )
