"""The device renews its own certificate, before it expires, without a gap in audio.

At ``renew_fraction`` of the certificate's lifetime (two thirds by default, a little earlier by
a random share up to ``renew_jitter`` so a fleet enrolled together does not renew together) the
device makes a **new** EC P-256 key and sends a CSR on ``RenewalService.Renew`` over its live
connection (the mTLS device port: its current certificate and session token authenticate it).
The answer is a certificate with the same identity and a token of the same session bound to it.
Then:

1. the current pair is copied to ``<cert>.prev`` / ``<key>.prev`` and the new key (0600) and
   certificate are written over the live paths, each file atomically (``write_atomic``);
2. a second connection is made with the new pair, resuming the session with that token: its
   streams attach to the session the old connection is playing (the server moves the audio
   stream over, packets in order), so the jitter buffer never runs dry;
3. once it is up (its first status request arrived) the old connection is closed and the
   previous pair deleted. If the new one does not come up, the previous pair goes back to the
   live paths and renewal is tried again ``renew_retry_s`` later.

A refused or failed renewal is retried every ``renew_retry_s`` until the certificate expires.
An expired certificate cannot renew (the server requires a valid one, as RFC 7030's re-enrolment
does): the device says so in one line and exits 78; it needs a new enrolment code. At start-up a
live pair that does not load while a previous one does (a power cut between two writes) is
replaced by the previous pair.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from auth import pki
from auth.device_credentials import (
    CredentialError,
    DeviceCredentials,
    expired_text,
    load_device_credentials,
)
from comms.files import write_atomic
from comms.gen import session_pb2 as spb
from device.client import DeviceClient
from device.connection import ConnectionManager

log = logging.getLogger(__name__)

PREVIOUS_SUFFIX = ".prev"
HANDOVER_TIMEOUT_S = 10.0  # the new connection's streams must be up within this


class RenewalFailed(Exception):
    """This renewal did not happen; the message says why (the current pair is in use still)."""


@dataclass(frozen=True)
class RenewalPolicy:
    fraction: float = 2 / 3  # of the lifetime
    jitter: float = 0.05  # renew up to this share of the lifetime earlier, at random
    retry_s: float = 300.0


def renew_at(not_before: float, not_after: float, policy: RenewalPolicy, rng: Callable[[], float]) -> float:
    """Wall clock at which to renew: ``fraction`` of the lifetime, less a random share of ``jitter``
    (never later than ``fraction``, so a server sees a device past it as overdue)."""
    lifetime = max(0.0, not_after - not_before)
    share = max(0.0, policy.fraction - policy.jitter * rng())
    return not_before + lifetime * share


@dataclass(frozen=True)
class CertificateFiles:
    """The live pair and where its predecessor waits until the new one has connected once."""

    cert: Path
    key: Path
    ca: Path

    @property
    def previous(self) -> tuple[Path, Path]:
        return self.cert.with_name(self.cert.name + PREVIOUS_SUFFIX), self.key.with_name(
            self.key.name + PREVIOUS_SUFFIX
        )

    def install(self, key_pem: bytes, chain_pem: bytes, ca_pem: bytes) -> None:
        """Keep the current pair as the previous one, then write the new pair (key first: a key
        without its certificate is harmless, the reverse would not load)."""
        prev_cert, prev_key = self.previous
        write_atomic(prev_key, self.key.read_bytes(), pki.PRIVATE_MODE)
        write_atomic(prev_cert, self.cert.read_bytes(), pki.PUBLIC_MODE)
        write_atomic(self.key, key_pem, pki.PRIVATE_MODE)
        write_atomic(self.cert, chain_pem, pki.PUBLIC_MODE)
        if ca_pem and (not self.ca.exists() or self.ca.read_bytes() != ca_pem):
            write_atomic(self.ca, ca_pem, pki.PUBLIC_MODE)

    def restore_previous(self) -> None:
        """The new pair never connected: the previous one goes back to the live paths."""
        prev_cert, prev_key = self.previous
        if prev_cert.exists() and prev_key.exists():
            write_atomic(self.key, prev_key.read_bytes(), pki.PRIVATE_MODE)
            write_atomic(self.cert, prev_cert.read_bytes(), pki.PUBLIC_MODE)
        self.forget_previous()

    def forget_previous(self) -> None:
        for path in self.previous:
            path.unlink(missing_ok=True)

    def load(self, trust_domain: str) -> DeviceCredentials:
        """The live pair; when it does not load (not for expiry) but the previous one does, the
        previous one is put back first (a power cut between the two writes of ``install``)."""
        try:
            return load_device_credentials(self.cert, self.key, self.ca, trust_domain)
        except CredentialError as exc:
            prev_cert, prev_key = self.previous
            if not (prev_cert.exists() and prev_key.exists()):
                raise
            try:
                load_device_credentials(prev_cert, prev_key, self.ca, trust_domain)
            except CredentialError:
                raise exc from None
            log.warning("device.renewal_rolled_back", extra={"detail": str(exc)[:200]})
            self.restore_previous()
            return load_device_credentials(self.cert, self.key, self.ca, trust_domain)


def new_key_and_request() -> tuple[bytes, bytes, ec.EllipticCurvePublicKey]:
    """A new key (PEM, PKCS#8), a CSR for it (DER; its subject says nothing), its public half."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "audio-device renewal")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, csr.public_bytes(serialization.Encoding.DER), key.public_key()


MakeClient = Callable[[DeviceCredentials, spb.CreateSessionResponse], DeviceClient]


class Renewer:
    """One loop beside the connection: sleep until renewal is due, renew, hand over, repeat."""

    def __init__(
        self,
        files: CertificateFiles,
        credentials: DeviceCredentials,
        trust_domain: str,
        policy: RenewalPolicy,
        make_client: MakeClient,
        on_renewed: Callable[[DeviceCredentials], None],
        on_expired: Callable[[str], None],
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.files = files
        self.credentials = credentials
        self._trust_domain = trust_domain
        self.policy = policy
        self._make_client = make_client
        self._on_renewed = on_renewed
        self._on_expired = on_expired
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self.renewals = 0
        self.failures = 0
        self.due = self._due()

    def _due(self) -> float:
        not_after = self.credentials.not_after.timestamp()
        not_before = (self.credentials.not_before or self.credentials.not_after).timestamp()
        return renew_at(not_before, not_after, self.policy, self._rng)

    async def run(self, manager: ConnectionManager) -> None:
        """Until cancelled (power off), or the certificate expired (``on_expired``)."""
        while True:
            now = self._clock()
            not_after = self.credentials.not_after.timestamp()
            if now >= not_after:
                line = expired_text(self.credentials.not_after)
                log.error(
                    "device.certificate_expired", extra={"not_after": self.credentials.not_after.isoformat()}
                )
                self._on_expired(line)
                return
            if now < self.due:
                await self._sleep(min(self.due, not_after) - now)
                continue
            client = manager.client
            if client is None or not client.ready.is_set():
                await self._sleep(min(self.policy.retry_s, not_after - now))  # renew once connected
                continue
            try:
                await self.renew(manager, client)
            except RenewalFailed as exc:
                self.failures += 1
                log.warning(
                    "device.renewal_failed",
                    extra={"detail": str(exc)[:300], "retry_in_s": self.policy.retry_s},
                )
                await self._sleep(min(self.policy.retry_s, max(0.0, not_after - self._clock())))

    async def _restore(self) -> None:
        """Put the previous pair back; a failure to (a read-only directory) is logged, not raised:
        ``install`` then never replaced the live pair either."""
        try:
            await asyncio.to_thread(self.files.restore_previous)
        except OSError as exc:
            log.error("device.renewal_restore_failed", extra={"error": f"{type(exc).__name__}: {exc}"[:200]})

    async def renew(self, manager: ConnectionManager, client: DeviceClient) -> None:
        """One renewal over ``client``'s connection, then the hand-over to a connection with the
        new pair; ``RenewalFailed`` leaves the current pair live."""
        key_pem, csr, public_key = await asyncio.to_thread(new_key_and_request)
        try:
            response = await client.renew(csr)
        except grpc.aio.AioRpcError as exc:
            raise RenewalFailed(f"renewal refused ({exc.code().name}): {exc.details()}") from None
        leaf = _leaf(response.certificate_chain)
        if leaf is None or _spki(leaf.public_key()) != _spki(public_key):
            raise RenewalFailed("the server's answer holds no certificate for the new key")
        try:
            await asyncio.to_thread(
                self.files.install, key_pem, response.certificate_chain, response.ca_bundle
            )
            credentials = await asyncio.to_thread(
                load_device_credentials, self.files.cert, self.files.key, self.files.ca, self._trust_domain
            )
        except (OSError, CredentialError) as exc:
            await self._restore()
            raise RenewalFailed(f"the new certificate could not be stored or used: {exc}") from None
        if credentials.identity != self.credentials.identity:
            await self._restore()
            raise RenewalFailed(f"the server issued a certificate for {credentials.identity}")
        session = spb.CreateSessionResponse(
            token=response.token,
            session_id=response.session_id,
            expires_at_unix=response.expires_at_unix,
            refresh_after_unix=response.refresh_after_unix,
        )
        try:
            await manager.hand_over(self._make_client(credentials, session), HANDOVER_TIMEOUT_S)
        except Exception as exc:
            await self._restore()
            raise RenewalFailed(f"the new certificate did not connect: {type(exc).__name__}") from None
        await asyncio.to_thread(self.files.forget_previous)
        self.credentials = credentials
        self.renewals += 1
        self.due = self._due()
        self._on_renewed(credentials)
        log.info(
            "device.renewed",
            extra={
                "serial": f"{leaf.serial_number:x}",
                "not_after": credentials.not_after.isoformat(),
                "renew_at": dt.datetime.fromtimestamp(self.due, dt.UTC).isoformat(),
            },
        )


def _leaf(chain: bytes) -> x509.Certificate | None:
    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError:
        return None
    return certs[0] if certs else None


def _spki(key: Any) -> bytes:
    return bytes(
        key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
