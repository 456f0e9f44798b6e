"""The raw grpc.aio baseline: DeviceService.ServerAudioStream over mTLS, prebuilt packets.

No authentication beyond TLS, no sessions: what grpc.aio itself costs per delivered packet on
this machine, so the service's cost can be stated as a ratio to it. ``baseline_server PKI``
writes at full speed (gRPC coalesces a stream's queued packets into few system calls);
``baseline_server PKI FRAME_MS`` writes one packet per stream every FRAME_MS, as real-time audio
must (one send per packet and connection), paced by one timer like the service's frame clock:
a stream that was still writing when a tick came writes that tick's packet too, so the floor
delivers every packet due, as the service does. The collector is tuned as the server's is
(``server.__main__.settle_heap``): the two differ by what the service does, not by that.
Prints ``PORT <n>``; ``sample`` on stdin prints one ``STATS {json}`` line; EOF stops.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from auth import pki
from comms.gen import comms_pb2 as pb
from comms.gen import comms_pb2_grpc as pb_grpc
from server.__main__ import settle_heap
from server.runtime.settings import ServerSettings

OPUS_BYTES_PER_MS = 8  # the service's default 64 kbit/s: 160 bytes per 20 ms packet, 480 per 60 ms


def packet(frame_ms: int) -> pb.AudioPacket:
    """Prebuilt, the size of one of the service's Opus packets of ``frame_ms`` (20 ms at full speed)."""
    return pb.AudioPacket(data=bytes(OPUS_BYTES_PER_MS * (frame_ms or 20)))


written = 0


class Baseline(pb_grpc.DeviceServiceServicer):
    def __init__(self, frame_ms: int = 0) -> None:
        self.frame_s = frame_ms / 1000
        self.packet = packet(frame_ms)
        self.tick = asyncio.Event()  # set once per frame: every paced stream writes one packet
        self.ticks = 0  # frames so far: a stream writes one packet per frame

    async def ticker(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.frame_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            self.ticks += 1
            self.tick.set()
            self.tick = asyncio.Event()

    async def ServerAudioStream(
        self, request: pb.AudioStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AudioPacket]:
        global written
        sent = self.ticks
        while True:
            if self.frame_s:
                while sent >= self.ticks:
                    await self.tick.wait()
                sent += 1
            written += 1
            yield self.packet


async def main(pki_dir: Path, frame_ms: int) -> None:
    server = grpc.aio.server()
    baseline = Baseline(frame_ms)
    pb_grpc.add_DeviceServiceServicer_to_server(baseline, server)
    ticker = asyncio.create_task(baseline.ticker()) if frame_ms else None
    credentials = grpc.ssl_server_credentials(
        [((pki_dir / pki.SERVER_KEY).read_bytes(), (pki_dir / pki.SERVER_CERT).read_bytes())],
        root_certificates=(pki_dir / pki.CA_CERT).read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    settle_heap(ServerSettings.model_fields["gc_young_threshold"].default)  # the server's default
    print(f"PORT {port}", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.strip() == "sample":
            cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
            print("STATS " + json.dumps({"cpu_s": cpu, "packets": written}), flush=True)
    if ticker is not None:
        ticker.cancel()
    await server.stop(0)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0))
