"""``audio-device enroll``: get this device's certificate with a one-time code; the key never leaves.

    audio-device enroll --server HOST:PORT --code CODE --ca-fingerprint SHA256:HEX [--pki-dir DIR]
    audio-device enroll --server HOST:PORT --code CODE --ca ca.crt
    audio-device enroll --server HOST:PORT --claim CLAIM-CODE --device-id PROPOSED --ca-fingerprint ...

With ``--claim`` (the tenant's shared claim code: open enrolment) the device queues a request and
waits until an operator approves it, possibly under another device id (``claim.py``).

The key (EC P-256) is made here and written, mode 0600 and atomically, only once the server has
issued its certificate; the server gets a CSR, which proves we hold the key. The server is
pinned, never trusted on first use: by the CA file given, or by the fingerprint printed with the
code (the enrolment port sends its CA after its certificate; only a CA with that fingerprint,
which also signed the server's certificate, is used, and gRPC's TLS then verifies the server
with it as usual). The files land where the client looks: ``PKI_DIR/devices/<tenant>/<device>.crt``
(the certificate followed by its issuing CA), ``.key`` beside it and ``PKI_DIR/ca.crt``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from auth import pki
from auth.errors import MaterialExists, PkiError
from auth.identity import DEFAULT_TRUST_DOMAIN, Identity
from comms.files import write_atomic
from comms.gen import enroll_pb2 as epb
from comms.gen import enroll_pb2_grpc as epb_grpc
from device.claim import ClaimFailed, claim_certificate
from device.exits import EXIT_PERMANENT

TIMEOUT_S = 20.0
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class EnrolmentFailed(Exception):
    """Enrolment did not happen; the message says why and what to do."""


@dataclass(frozen=True)
class Enrolled:
    identity: Identity
    cert_path: Path
    key_path: Path
    ca_path: Path


def parse_fingerprint(text: str) -> str:
    """``SHA256:AB:CD...`` / ``sha256:abcd...`` / bare hex -> 64 lower-case hex digits."""
    digits = text.strip().lower().removeprefix("sha256:").replace(":", "")
    if not _HEX64.fullmatch(digits):
        raise EnrolmentFailed(f"--ca-fingerprint {text!r} is not SHA256:<64 hex digits>")
    return digits


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _split(server: str) -> tuple[str, int]:
    host, sep, port = server.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise EnrolmentFailed(f"--server {server!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


_DER = 2  # _ssl.ENCODING_DER: Certificate.public_bytes' DER format


def _unverified_chain(tls: ssl.SSLSocket) -> list[Any]:
    """What the peer sent: ``SSLSocket.get_unverified_chain`` from Python 3.13, the same method
    of the underlying ``_ssl`` object on 3.10-3.12."""
    getter = getattr(tls, "get_unverified_chain", None) or tls._sslobj.get_unverified_chain  # type: ignore[attr-defined]
    return list(getter() or [])


def presented_chain(
    server: str, server_name: str | None, timeout_s: float = TIMEOUT_S
) -> list[x509.Certificate]:
    """The certificates the enrolment port presents, unverified (we verify them by the pin)."""
    host, port = _split(server)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # nothing is trusted from this handshake but a pinned CA
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=server_name or host) as tls,
        ):
            ders = [c.public_bytes(_DER) for c in _unverified_chain(tls)]
    except OSError as exc:
        raise EnrolmentFailed(
            f"cannot reach the enrolment service at {server}: {exc.strerror or exc}"
        ) from None
    return [x509.load_der_x509_certificate(der) for der in ders]


def pinned_ca(chain: Sequence[x509.Certificate], pin: str) -> bytes:
    """The presented CA with fingerprint ``pin`` that signed the server's certificate, as PEM."""
    if not chain:
        raise EnrolmentFailed("the enrolment service presented no certificate")
    leaf = chain[0]
    for cert in chain[1:]:
        if fingerprint(cert) != pin:
            continue
        try:
            leaf.verify_directly_issued_by(cert)
        except (ValueError, TypeError, InvalidSignature):
            break
        return cert.public_bytes(serialization.Encoding.PEM)
    raise EnrolmentFailed(
        "the server did not present the CA with that fingerprint (wrong server, or wrong "
        "fingerprint): nothing was sent"
    )


def new_request(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A CSR proving we hold ``key`` (DER). Its subject says nothing: the code decides who we are."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "audio-device enrolment")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class ClaimAs:
    """Open enrolment: the code given is the tenant's claim code; wait for an operator."""

    proposed_id: str
    announce: Callable[[str], None] = print
    wait_s: float | None = None  # None: until the request expires


async def request_certificate(
    server: str,
    code: str,
    ca_pem: bytes,
    key: ec.EllipticCurvePrivateKey,
    server_name: str | None,
    claim: ClaimAs | None = None,
) -> epb.EnrollResponse:
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    csr = new_request(key)
    async with grpc.aio.secure_channel(server, credentials, options=options) as channel:
        try:
            if claim is not None:
                return await claim_certificate(
                    channel, code, claim.proposed_id, key, csr, claim.announce, claim.wait_s
                )
            return await epb_grpc.EnrollmentServiceStub(channel).Enroll(
                epb.EnrollRequest(code=code, csr=csr), timeout=TIMEOUT_S
            )
        except ClaimFailed as exc:
            raise EnrolmentFailed(str(exc)) from None
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE and "Socket closed" in (exc.details() or ""):
                raise EnrolmentFailed(f"cannot reach the enrolment service at {server}") from None
            raise EnrolmentFailed(f"enrolment refused ({exc.code().name}): {exc.details()}") from None


def _check_response(
    response: epb.EnrollResponse, key: ec.EllipticCurvePrivateKey, trust_domain: str
) -> Identity:
    try:
        identity = Identity(response.tenant, response.device_id)
        leaf = x509.load_pem_x509_certificates(response.certificate_chain)[0]
    except ValueError:
        raise EnrolmentFailed("the server's answer holds no usable certificate") from None
    if leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise EnrolmentFailed("the server's certificate is not for this device's key")
    del trust_domain  # the client checks the identity against its trust domain when it starts
    return identity


def store(
    pki_dir: Path, identity: Identity, key: ec.EllipticCurvePrivateKey, chain: bytes, ca: bytes, force: bool
) -> Enrolled:
    """Key 0600, certificate chain and CA 0644, each written atomically; nothing overwritten
    unless ``force`` (checked before anything is written)."""
    cert_path, key_path = pki.device_paths(pki_dir, identity)
    ca_path = pki_dir / pki.CA_CERT
    if not force:
        for path in (cert_path, key_path):
            if path.exists():
                raise MaterialExists(f"{path} already exists (use --force to enrol this device again)")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_atomic(key_path, key_pem, pki.PRIVATE_MODE)
    write_atomic(cert_path, chain, pki.PUBLIC_MODE)
    if not ca_path.exists() or ca_path.read_bytes() != ca:
        write_atomic(ca_path, ca, pki.PUBLIC_MODE)
    return Enrolled(identity, cert_path, key_path, ca_path)


async def enrol(
    server: str,
    code: str,
    pki_dir: Path,
    *,
    ca_file: Path | None = None,
    ca_fingerprint: str | None = None,
    server_name: str | None = None,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    force: bool = False,
    claim: ClaimAs | None = None,
) -> Enrolled:
    if ca_file is not None:
        try:
            ca_pem = await asyncio.to_thread(ca_file.read_bytes)
        except OSError as exc:
            raise EnrolmentFailed(f"cannot read --ca {ca_file}: {exc.strerror or exc}") from None
    elif ca_fingerprint is not None:
        pin = parse_fingerprint(ca_fingerprint)
        chain = await asyncio.to_thread(presented_chain, server, server_name)
        ca_pem = pinned_ca(chain, pin)
    else:
        raise EnrolmentFailed("give --ca-fingerprint (printed with the code) or --ca")
    if not force:  # before the code is used: a refusal after it would waste it
        existing = await asyncio.to_thread(lambda: sorted((pki_dir / pki.DEVICES_DIR).rglob("*.crt")))
        if existing:
            raise EnrolmentFailed(
                f"this device already has a certificate ({existing[0]}): use --force to enrol it again"
            )
    key = ec.generate_private_key(ec.SECP256R1())  # made here; only its public half leaves
    response = await request_certificate(server, code, ca_pem, key, server_name, claim)
    identity = _check_response(response, key, trust_domain)
    return await asyncio.to_thread(
        store, pki_dir, identity, key, response.certificate_chain, response.ca_bundle, force
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audio-device enroll", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--server", required=True, help="the enrolment service HOST:PORT (printed with the code)"
    )
    secret = parser.add_mutually_exclusive_group(required=True)
    secret.add_argument("--code", help="the one-time enrolment code")
    secret.add_argument(
        "--claim", help="the tenant's claim code (open enrolment: waits for an operator's approval)"
    )
    parser.add_argument("--device-id", help="with --claim: the device id to propose (the operator decides)")
    parser.add_argument(
        "--wait", type=float, help="with --claim: give up after this many seconds (default: until it expires)"
    )
    pin = parser.add_mutually_exclusive_group(required=True)
    pin.add_argument("--ca-fingerprint", help="SHA256:<hex> of the fleet CA (printed with the code)")
    pin.add_argument("--ca", type=Path, help="the fleet CA file, instead of a fingerprint")
    parser.add_argument(
        "--server-name", help="expected server certificate name (default: the host of --server)"
    )
    parser.add_argument(
        "--pki-dir", type=Path, default=Path("certs/dev"), help="where the client looks (its --pki-dir)"
    )
    parser.add_argument("--trust-domain", default=DEFAULT_TRUST_DOMAIN)
    parser.add_argument(
        "--force", action="store_true", help="replace this device's existing key and certificate"
    )
    return parser


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    claim = None
    if args.claim is not None:
        if not args.device_id:
            parser.error("--claim needs --device-id (the id to propose)")
        claim = ClaimAs(args.device_id, announce=lambda line: print(line, flush=True), wait_s=args.wait)
    elif args.device_id or args.wait is not None:
        parser.error("--device-id and --wait go with --claim (a one-time code names its device)")
    try:
        done = asyncio.run(
            enrol(
                args.server,
                args.code if claim is None else args.claim,
                args.pki_dir,
                ca_file=args.ca,
                ca_fingerprint=args.ca_fingerprint,
                server_name=args.server_name,
                trust_domain=args.trust_domain,
                force=args.force,
                claim=claim,
            )
        )
    except (EnrolmentFailed, PkiError) as exc:
        print(f"audio-device enroll: {exc}", file=sys.stderr)
        return EXIT_PERMANENT
    print(f"enrolled as {done.identity}: certificate {done.cert_path}, CA {done.ca_path}")
    print(f"private key {done.key_path} (0600; made on this device, never sent)")
    print(
        f"start the client with: audio-device --pki-dir {args.pki_dir} --tenant {done.identity.tenant} "
        f"--device {done.identity.device_id}"
    )
    return 0
