"""The raw grpc.aio baseline: DeviceService.ServerAudioStream over mTLS, prebuilt packets, full speed.

No authentication beyond TLS, no sessions, no pacing: what grpc.aio itself costs per delivered
packet on this machine, so the service's cost can be stated as a ratio to it. Prints ``PORT <n>``;
``sample`` on stdin prints one ``STATS {json}`` line (CPU seconds, packets written); EOF stops.
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

PACKET = pb.AudioPacket(data=bytes(160))  # about a 64 kbit/s 20 ms Opus packet
written = 0


class Baseline(pb_grpc.DeviceServiceServicer):
    async def ServerAudioStream(
        self, request: pb.AudioStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AudioPacket]:
        global written
        while True:
            written += 1
            yield PACKET


async def main(pki_dir: Path) -> None:
    server = grpc.aio.server()
    pb_grpc.add_DeviceServiceServicer_to_server(Baseline(), server)
    credentials = grpc.ssl_server_credentials(
        [((pki_dir / pki.SERVER_KEY).read_bytes(), (pki_dir / pki.SERVER_CERT).read_bytes())],
        root_certificates=(pki_dir / pki.CA_CERT).read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    print(f"PORT {port}", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.strip() == "sample":
            cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
            print("STATS " + json.dumps({"cpu_s": cpu, "packets": written}), flush=True)
    await server.stop(0)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
