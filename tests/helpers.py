"""Test helpers: an ephemeral PKI and clients against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from cryptography import x509

from auth import pki
from auth.identity import DEFAULT_TRUST_DOMAIN, Identity
from auth.issuing_ca import create_issuing_ca, write_issuing_ca
from auth.keys import create_signing_key
from auth.operators import OperatorIdentity, Role
from auth.tls import TlsMaterial
from comms.gen import comms_pb2 as pb

MODE, STOP, PLAY = 1, 2, 3  # BUTTON_2, BUTTON_3, BUTTON_4
CONNECT = 0


@dataclass
class EphemeralPki:
    """A CA made at test time, its server cert for 127.0.0.1/localhost, device certs on demand."""

    root: Path
    ca: pki.CertifiedKey = field(default_factory=pki.create_ca)
    _devices: dict[Identity, pki.CertifiedKey] = field(default_factory=dict)
    _issuing: pki.CertifiedKey | None = None

    def __post_init__(self) -> None:
        self.server = pki.issue_server_cert(self.ca, ["localhost"], ["127.0.0.1"])
        pki.write_certified_key(self.ca, self.root / pki.CA_CERT, self.root / pki.CA_KEY)
        pki.write_certified_key(self.server, self.root / pki.SERVER_CERT, self.root / pki.SERVER_KEY)
        self.signing_dir = self.root / "signing"
        create_signing_key(self.signing_dir)

    def device(self, tenant: str, device: str) -> pki.CertifiedKey:
        identity = Identity(tenant, device)
        if identity not in self._devices:
            self._devices[identity] = pki.issue_device_cert(self.ca, identity, DEFAULT_TRUST_DOMAIN)
        return self._devices[identity]

    def issuing_ca(self) -> pki.CertifiedKey:
        """This PKI's issuing CA (made on first use, signed by the root; written to
        ROOT/issuing, where a server with --enroll-bind finds it)."""
        if self._issuing is None:
            self._issuing = create_issuing_ca(self.ca, DEFAULT_TRUST_DOMAIN)
            write_issuing_ca(self._issuing, self.root)
        return self._issuing

    def issued_tls(self, tenant: str, device: str, issuing: pki.CertifiedKey | None = None) -> TlsMaterial:
        """A device certificate from an issuing CA (this PKI's by default), sent as leaf + CA."""
        ca = issuing or self.issuing_ca()
        leaf = pki.issue_device_cert(ca, Identity(tenant, device), DEFAULT_TRUST_DOMAIN)
        return TlsMaterial(leaf.cert_pem() + ca.cert_pem(), leaf.key_pem(), self.ca.cert_pem())

    def issue_plain(self) -> pki.CertifiedKey:
        """A client certificate from this CA with no identity at all."""
        return pki.issue_certificate(self.ca, "no-identity", [], server=False)

    def tls(self, material: pki.CertifiedKey) -> TlsMaterial:
        return TlsMaterial(material.cert_pem(), material.key_pem(), self.ca.cert_pem())

    def device_tls(self, tenant: str, device: str) -> TlsMaterial:
        return self.tls(self.device(tenant, device))

    def operator_tls(self, tenant: str | None, name: str = "ops", role: str = "admin") -> TlsMaterial:
        """An operator of ``tenant`` (None: a platform operator) with ``role`` signed in."""
        operator = OperatorIdentity(name, Role.parse(role), tenant)
        return self.tls(pki.issue_operator_cert(self.ca, operator, DEFAULT_TRUST_DOMAIN))

    def odd_client(self, sans: list[x509.GeneralName], **kwargs: object) -> TlsMaterial:
        """A client cert signed by this CA with arbitrary SANs/validity (for rejection tests)."""
        return self.tls(pki.issue_certificate(self.ca, "odd", sans, server=False, **kwargs))  # type: ignore[arg-type]


def free_port() -> int:
    """A loopback port nobody listens on right now (for servers that must restart on the same port)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def mode_of(leds: list[int]) -> int | None:
    """Read the mode back from led_2..led_5 using the documented LED table."""
    from server.devices.leds import MODE_LEDS, MODE_PALETTE

    lit = [(i, c) for i, c in enumerate(leds[2:6]) if c]
    if len(lit) != 1:
        return None
    index, colour = lit[0]
    return MODE_PALETTE.index(colour) * MODE_LEDS + index


def best_correlation(received: npt.ArrayLike, reference: npt.ArrayLike, max_lag: int = 1200) -> float:
    """Normalised correlation of two signals at the best small lag (Opus adds a short delay).

    Either may be a numpy array (the server's clips) or a plain buffer (a device's recording)."""
    a = np.asarray(received, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    best = 0.0
    for lag in range(0, max_lag, 8):
        n = min(len(a) - lag, len(b))
        if n <= 0:
            break
        x, y = a[lag : lag + n], b[:n]
        denom = np.sqrt((x * x).sum() * (y * y).sum())
        if denom:
            best = max(best, float((x * y).sum() / denom))
    return best


def fit_scores(needle: npt.ArrayLike, haystack: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """How well ``needle`` fits ``haystack`` at each sample offset (normalised correlation, 0..1).
    Either may be the device sink's ``array('h')`` or a clip's numpy array."""
    x, y = np.asarray(needle, dtype=np.float64), np.asarray(haystack, dtype=np.float64)
    n = len(x)
    size = 1 << (len(y) + n).bit_length()
    corr = np.fft.irfft(np.fft.rfft(y, size) * np.conj(np.fft.rfft(x, size)), size)[: len(y) - n + 1]
    energy = np.sqrt(np.maximum(np.convolve(y * y, np.ones(n), "valid"), 1e-9) * max((x * x).sum(), 1e-9))
    return corr / energy  # type: ignore[no-any-return]


def best_offset(needle: npt.ArrayLike, haystack: npt.ArrayLike) -> tuple[int, float]:
    """Where in ``haystack`` ``needle`` fits best (sample offset) and how well."""
    score = fit_scores(needle, haystack)
    best = int(np.argmax(score))
    return best, float(score[best])


SAMPLES_PER_20MS = 960


def heard_clip(
    heard: npt.ArrayLike, clip: npt.ArrayLike, window_frames: int = 5, share: float = 0.75
) -> bool:
    """What a device heard is ``clip``, in order, allowing for packets the server's live edge
    skipped as late (a loaded machine can stall a stream for longer than the 200 ms it allows).

    ``heard`` is cut into windows of ``window_frames`` 20 ms frames; a window matches where it
    fits in ``clip`` (correlation > 0.9) after where the window before it matched. At least
    ``share`` of the windows must match: a skip spoils only the window it falls in, while any
    other sound (another clip, silence, noise) matches almost none."""
    samples = np.asarray(heard, dtype=np.float64)
    reference = np.asarray(clip, dtype=np.float64)
    size = min(window_frames * SAMPLES_PER_20MS, len(samples), len(reference))
    if size < SAMPLES_PER_20MS:
        return False
    windows = [samples[i : i + size] for i in range(0, len(samples) - size + 1, size)]
    matched, start = 0, 0
    for window in windows:
        if len(reference) - start < size:
            break
        fits = np.flatnonzero(fit_scores(window, reference[start:]) > 0.9)
        if len(fits):  # the earliest fit after the window before (a tone fits every period)
            matched, start = matched + 1, start + int(fits[0]) + 1
    return matched >= share * len(windows)


def button_event(button: int, kind: int = pb.ButtonEvent.PRESS) -> pb.DeviceEvent:
    return pb.DeviceEvent(button_event=pb.ButtonEvent(button_id=button, event=kind))


async def open_session(channel: object) -> tuple[tuple[str, str], ...]:
    """CreateSession on a raw channel; the metadata DeviceService calls then need."""
    from comms.gen import session_pb2 as spb
    from comms.gen import session_pb2_grpc as spb_grpc

    response = await spb_grpc.SessionServiceStub(channel).CreateSession(spb.CreateSessionRequest())
    return (("authorization", f"Bearer {response.token}"),)


def build_cert(
    issuer: pki.CertifiedKey,
    sans: list[x509.GeneralName],
    *,
    ca: bool | None = False,
    key_usage: dict[str, bool] | None = None,
    omit_key_usage: bool = False,
) -> pki.CertifiedKey:
    """A client certificate with chosen BasicConstraints/KeyUsage (None: no BasicConstraints at all)."""
    import datetime as dt

    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = pki.new_key()
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if not omit_key_usage:
        builder = builder.add_extension(pki.key_usage(ca=bool(ca), **(key_usage or {})), critical=True)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return pki.CertifiedKey(key, builder.sign(issuer.key, hashes.SHA256()))


def auth_failures() -> dict[str, float]:
    """audio_auth_failures_total by reason, right now (compare before/after to see what was counted)."""
    from server import metrics

    return {
        sample.labels["reason"]: sample.value
        for family in metrics.AUTH_FAILURES.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def counted_since(before: dict[str, float]) -> dict[str, float]:
    """The reasons counted since ``before`` and how often."""
    after = auth_failures()
    return {reason: n - before.get(reason, 0) for reason, n in after.items() if n != before.get(reason, 0)}


def sample(name: str, **labels: str) -> float:
    """A metric's value as a scrape would read it right now (0 when absent)."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def skipped_packets() -> float:
    """Audio packets this process's servers did not send: stale at hand-off (the live edge) or
    piled up while a link was down."""
    return sum(sample("audio_packets_skipped_total", reason=r) for r in ("late", "overflow"))


def connected(tenant: str) -> float:
    return sample("audio_connected_devices", tenant=tenant)


async def reload_attempt(watchers: list, name: str, change: Callable[[], object], ok: bool) -> None:  # type: ignore[type-arg]
    """Make ``change`` and wait until the named watcher has tried a reload that ended ``ok``."""
    (watcher,) = [w for w in watchers if w.name == name]
    before = watcher.attempts
    change()
    await wait_for(lambda: watcher.attempts > before and watcher.last_ok is ok)
