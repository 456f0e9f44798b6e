"""Turn gRPC's connection errors into one line a person can act on.

gRPC reports TLS and network failures as long C-core strings (often cut off in
logs); the common causes are few and each has a fix. ``explain`` is pure:
code + details in, a sentence with a hint out (None when nothing better is known).
"""

from __future__ import annotations

import grpc

# (marker in gRPC's details, what it means and what to do); first match wins
_CAUSES: tuple[tuple[str, str], ...] = (
    (
        "WRONG_VERSION_NUMBER",
        "the server did not answer with TLS: wrong port, or a plaintext port such as health or metrics? "
        "Use the device port (AUDIO_DEVICE_SERVER, usually :50051)",
    ),
    (
        "CERTIFICATE_VERIFY_FAILED",
        "the server's certificate is not signed by this device's CA (AUDIO_DEVICE_CA): "
        "wrong server, or this device was provisioned for another fleet",
    ),
    (
        "Hostname Verification Check failed",
        "the server's certificate does not name the host in AUDIO_DEVICE_SERVER: connect by a name in "
        "its certificate, or set AUDIO_DEVICE_SERVER_NAME to one",
    ),
    (
        "Socket closed",
        "the server closed the connection during the TLS handshake: it probably does not accept this "
        "device's certificate (issued by another CA, or expired); ask the operator to re-provision it",
    ),
    ("Connection refused", "nothing listens at AUDIO_DEVICE_SERVER: server down, or wrong host or port"),
    ("Domain name not found", "the server's host name does not resolve: check AUDIO_DEVICE_SERVER and DNS"),
    ("hostname lookup error", "the server's host name does not resolve: check AUDIO_DEVICE_SERVER and DNS"),
    ("Network is unreachable", "no route to the server: check the device's network"),
    ("Connection timed out", "the server does not answer: network or firewall between device and server?"),
)


def explain(code: grpc.StatusCode, details: str) -> str | None:
    """One line for a connection failure, or None when gRPC's own words are all we know."""
    if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED):
        return None
    for marker, meaning in _CAUSES:
        if marker in details:
            return meaning
    return None
