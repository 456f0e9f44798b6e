"""Open enrolment from the device: queue a request with the tenant's claim code, then wait.

``audio-device enroll --claim CODE --device-id PROPOSED ...`` sends the CSR and the id it would
like with ``Claim``, prints the request id and its key's fingerprint (what the operator compares
before approving), and polls until an operator decides: each ``Poll`` is signed with the key
(``auth.poll_proof``), so only this device can collect the certificate. The identity is the
approval's (the operator may choose another device id than the one proposed). A denial, an
expired request or the wait running out end it with one line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc
from cryptography.hazmat.primitives.asymmetric import ec

from auth import poll_proof
from comms.gen import enroll_pb2 as epb
from comms.gen import enroll_pb2_grpc as epb_grpc

CALL_TIMEOUT_S = 20.0
MIN_POLL_S, MAX_POLL_S = 0.1, 300.0
UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)  # polled again


class ClaimFailed(Exception):
    """The request was refused, denied or expired; the message says so."""


async def claim_certificate(
    channel: grpc.aio.Channel,
    claim_code: str,
    proposed_id: str,
    key: ec.EllipticCurvePrivateKey,
    csr: bytes,
    announce: Callable[[str], None],
    wait_s: float | None = None,
) -> epb.EnrollResponse:
    """Claim, then poll until the certificate is issued (or the request is denied or expires)."""
    stub = epb_grpc.EnrollmentServiceStub(channel)
    try:
        claimed = await stub.Claim(
            epb.ClaimRequest(claim_code=claim_code, csr=csr, proposed_device_id=proposed_id),
            timeout=CALL_TIMEOUT_S,
        )
    except grpc.aio.AioRpcError as exc:
        raise ClaimFailed(f"enrolment request refused ({exc.code().name}): {exc.details()}") from None
    announce(
        f"enrolment request {claimed.request_id} for tenant {claimed.tenant} is waiting for an "
        f"operator's approval (this device's key: {claimed.key_fingerprint})"
    )
    deadline = time.monotonic() + max(0.0, claimed.expires_unix - time.time())
    if wait_s is not None:
        deadline = min(deadline, time.monotonic() + wait_s)
    signature = poll_proof.sign(key, claimed.request_id)
    interval = min(max(claimed.retry_after_s, MIN_POLL_S), MAX_POLL_S)
    while True:
        try:
            polled = await stub.Poll(
                epb.PollRequest(request_id=claimed.request_id, signature=signature), timeout=CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in UNREACHABLE:
                raise ClaimFailed(f"enrolment request {claimed.request_id}: {exc.details()}") from None
        else:
            if polled.state == epb.PollResponse.ISSUED:
                return polled.issued
            interval = min(max(polled.retry_after_s, MIN_POLL_S), MAX_POLL_S)
        if time.monotonic() + interval > deadline:
            raise ClaimFailed(f"enrolment request {claimed.request_id} was not approved in time: claim again")
        await asyncio.sleep(interval)
