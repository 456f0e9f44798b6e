"""Session creation rate (full mTLS handshake + CreateSession) and per-call token verification cost."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import grpc

from auth.identity import Identity
from auth.keys import create_signing_key, load_keyring
from auth.tls import TlsMaterial, channel_credentials
from auth.tokens import TokenPolicy, check_binding, issue_token, verify_token
from comms.gen import session_pb2 as spb
from comms.gen import session_pb2_grpc as spb_grpc

CONCURRENCY = 8
VERIFY_ROUNDS = 5000


async def sessions_per_second(port: int, creds: Sequence[TlsMaterial]) -> tuple[float, int]:
    """Each session on a fresh channel, so every one pays a full TLS handshake."""
    queue = list(creds)

    async def worker() -> int:
        done = 0
        while queue:
            tls = queue.pop()
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", channel_credentials(tls)) as channel:
                await spb_grpc.SessionServiceStub(channel).CreateSession(spb.CreateSessionRequest())
            done += 1
        return done

    started = time.perf_counter()
    total = sum(await asyncio.gather(*(worker() for _ in range(CONCURRENCY))))
    return total / (time.perf_counter() - started), total


def verification_cost_us() -> float:
    """Signature + claims + certificate binding of one token, as the interceptor does per call."""
    with tempfile.TemporaryDirectory() as tmp:
        create_signing_key(Path(tmp))
        ring = load_keyring(Path(tmp))
    policy = TokenPolicy("audio-server", "audio-device-service", 900, 30)
    identity = Identity("bench", "d0")
    token = issue_token(ring, policy, identity, "sid", "thumb").token
    for _ in range(200):  # warm up
        check_binding(verify_token(token, ring, policy), identity, "thumb")
    started = time.perf_counter()
    for _ in range(VERIFY_ROUNDS):
        check_binding(verify_token(token, ring, policy), identity, "thumb")
    return (time.perf_counter() - started) / VERIFY_ROUNDS * 1e6
