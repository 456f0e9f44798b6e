"""A command to a node while another command on that node loads a large uploaded sound.

Two server processes on one Redis; two devices on B; the operator talks to A,
so every command crosses the bus to B. Each round uploads a fresh 60 s sound
(a cache miss on B), then sends Play for device 1 (B reads the blob from Redis
and decodes it) and, at the same moment, SetMode for device 2. Printed: the
SetMode latency alone and while the Play loads (median / p99 / max), never
asserted. With the bus handled inline, the SetMode waits for the whole load.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import soundfile

from admin.client import FleetClient
from auth import pki
from auth.identity import DEFAULT_TRUST_DOMAIN, Identity
from auth.operators import OperatorIdentity, Role
from auth.tls import TlsMaterial
from bench.bench_admin import percentile, server_pki, two_replicas, until
from comms.gen import admin_pb2 as apb
from device.audio_sink import NullSink
from device.client import DeviceClient

ROUNDS = 8
BASELINE_ROUNDS = 30
SOUND_S = 60
SAMPLE_RATE = 48_000
CHUNK = 64 * 1024
LOUD, OTHER = "bus-loud", "bus-other"


def noise_wav(seed: int) -> bytes:
    """A fresh sound each round: new content, new blob, a cache miss on B."""
    samples = np.random.default_rng(seed).standard_normal(SAMPLE_RATE * SOUND_S) * 3000
    out = io.BytesIO()
    soundfile.write(out, samples.astype(np.int16), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return out.getvalue()


async def upload(stub: object, data: bytes) -> None:
    async def chunks() -> AsyncIterator[apb.UploadSoundChunk]:
        yield apb.UploadSoundChunk(mode=0, filename="noise.wav")
        for start in range(0, len(data), CHUNK):
            yield apb.UploadSoundChunk(data=data[start : start + CHUNK])

    await stub.UploadSound(chunks(), timeout=120)  # type: ignore[attr-defined]


async def timed(call: object) -> float:
    started = time.monotonic()
    await call  # type: ignore[misc]
    return time.monotonic() - started


def line(label: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"  {label}: {statistics.median(ms):6.1f} / {percentile(ms, 0.99):6.1f} / {max(ms):6.1f} ms "
        f"(median / p99 / max, {len(ms)} commands)"
    )


async def measure(
    target_b: str, admin_a: str, loud: TlsMaterial, other: TlsMaterial, op: TlsMaterial
) -> None:
    async with (
        DeviceClient(target_b, loud, NullSink()) as loud_client,
        DeviceClient(target_b, other, NullSink()) as other_client,
        FleetClient(admin_a, op) as on_a,
    ):
        await until(lambda: loud_client.status_requests >= 1 and other_client.status_requests >= 1)
        stub = on_a.stub
        loud_ref, other_ref = apb.DeviceRef(device_id=LOUD), apb.DeviceRef(device_id=OTHER)
        alone = []
        for i in range(BASELINE_ROUNDS):
            alone.append(await timed(stub.SetMode(apb.SetModeRequest(device=other_ref, mode=i % 3))))
        during, plays = [], []
        for i in range(ROUNDS):
            await upload(stub, noise_wav(i))
            play = asyncio.ensure_future(timed(stub.Play(loud_ref, timeout=10)))
            await asyncio.sleep(0.005)  # the Play's command reaches B first
            during.append(await timed(stub.SetMode(apb.SetModeRequest(device=other_ref, mode=i % 3))))
            plays.append(await play)
            await stub.Stop(loud_ref)
    print(line("SetMode to a device on B, nothing else going on", alone))
    print(line(f"SetMode to a device on B while B loads a {SOUND_S} s upload for a Play", during))
    print(line("  (the Play that loads it)", plays))


def run() -> None:
    print("\nA command to a node busy loading a large uploaded sound (2 server processes, 1 Redis):")
    binary = shutil.which("redis-server")
    if binary is None:
        print("  skipped: redis-server is not installed")
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ca = server_pki(root)

        def material(cert: pki.CertifiedKey) -> TlsMaterial:
            return TlsMaterial(cert.cert_pem(), cert.key_pem(), ca.cert_pem())

        loud = pki.issue_device_cert(ca, Identity("acme", LOUD), DEFAULT_TRUST_DOMAIN)
        other = pki.issue_device_cert(ca, Identity("acme", OTHER), DEFAULT_TRUST_DOMAIN)
        operator = pki.issue_operator_cert(ca, OperatorIdentity("bench", Role.OPERATOR, "acme"))
        with two_replicas(root, binary) as nodes:
            asyncio.run(
                measure(
                    nodes.device_b,
                    nodes.admin_a,
                    material(loud),
                    material(other),
                    material(operator),
                )
            )


if __name__ == "__main__":
    run()
