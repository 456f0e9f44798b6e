"""One load-generating process: many lean devices, measured, one JSON line of results.

Several of these run side by side so the load generator is not the bottleneck of one core.

``baseline PKI TARGET FIRST COUNT SECONDS``: COUNT raw audio streams, packets counted.
``realtime PKI TARGET FIRST COUNT SECONDS FRAME_MS``: COUNT devices (CreateSession asking for
FRAME_MS), all playing the long sound; over SECONDS: packets received, packets more than 50 ms
behind their sound's own schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
import time
from pathlib import Path

import grpc

from auth import pki
from auth.identity import Identity
from auth.tls import TlsMaterial, channel_credentials
from comms import comms_pb2 as pb
from comms import comms_pb2_grpc as pb_grpc
from comms import session_pb2 as spb
from comms import session_pb2_grpc as spb_grpc

LATE_S = 0.050
SUCCESS = pb.DeviceStatusResponse(status="success")
MODE, PLAY = 1, 3
CONNECT_BATCH = 50


def cpu_seconds() -> float:
    return sum(resource.getrusage(resource.RUSAGE_SELF)[:2])


def tls(pki_dir: Path, index: int) -> TlsMaterial:
    cert, key = pki.device_paths(pki_dir, Identity("bench", f"d{index:04d}"))
    return TlsMaterial(cert.read_bytes(), key.read_bytes(), (pki_dir / pki.CA_CERT).read_bytes())


class Device:
    def __init__(self, target: str, material: TlsMaterial, frame_ms: int) -> None:
        self.channel = grpc.aio.secure_channel(target, channel_credentials(material))
        self.frame_s = frame_ms / 1000
        self.frame_ms = frame_ms
        self.packets = 0
        self.late = 0
        self.counting = False
        self._first = 0.0
        self._index = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        session = await spb_grpc.SessionServiceStub(self.channel).CreateSession(
            spb.CreateSessionRequest(max_frame_ms=self.frame_ms)
        )
        metadata = (("authorization", f"Bearer {session.token}"),)
        stub = pb_grpc.DeviceServiceStub(self.channel)
        self.status = stub.StatusStream(metadata=metadata)
        self.events = stub.EventStream(metadata=metadata)
        self.audio = stub.ServerAudioStream(pb.AudioStreamRequest(start=True), metadata=metadata)
        self._tasks = [asyncio.create_task(self._answer()), asyncio.create_task(self._listen())]

    async def _answer(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            while (request := await self.status.read()) is not grpc.aio.EOF:
                await self.status.write(
                    SUCCESS if request.HasField("set") else pb.DeviceStatusResponse(state=pb.DeviceStatus())
                )

    async def _listen(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for packet in self.audio:
                now = time.perf_counter()
                if packet.is_start:
                    self._first, self._index = now, 0
                else:
                    self._index += 1
                if self.counting:
                    self.packets += 1
                    if now - (self._first + self._index * self.frame_s) > LATE_S:
                        self.late += 1

    async def press(self, button: int) -> None:
        await self.events.write(pb.DeviceEvent(button_event=pb.ButtonEvent(button_id=button)))  # type: ignore[arg-type]
        await self.events.read()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.channel.close()


async def realtime(pki_dir: Path, target: str, first: int, count: int, seconds: float, frame_ms: int) -> dict:
    devices = [Device(target, tls(pki_dir, first + i), frame_ms) for i in range(count)]
    failed = 0
    for start in range(0, count, CONNECT_BATCH):
        results = await asyncio.gather(
            *(d.start() for d in devices[start : start + CONNECT_BATCH]), return_exceptions=True
        )
        failed += sum(isinstance(r, BaseException) for r in results)
    live = [d for d in devices if d._tasks]
    await asyncio.gather(*(d.press(MODE) for d in live))
    await asyncio.gather(*(d.press(PLAY) for d in live))
    print("READY", flush=True)
    sys.stdin.readline()  # the orchestrator starts every generator's window together
    for device in live:
        device.counting = True
    started, cpu_before = time.perf_counter(), cpu_seconds()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - started
    result = {
        "cpu_pct": 100 * (cpu_seconds() - cpu_before) / elapsed,
        "devices": len(live),
        "failed": failed,
        "packets": sum(d.packets for d in live),
        "late": sum(d.late for d in live),
        "elapsed": elapsed,
    }
    await asyncio.gather(*(d.close() for d in devices), return_exceptions=True)
    return result


async def baseline(pki_dir: Path, target: str, first: int, count: int, seconds: float) -> dict:
    channels = [
        grpc.aio.secure_channel(target, channel_credentials(tls(pki_dir, first + i))) for i in range(count)
    ]
    received = 0
    counting = False

    async def drain(channel: grpc.aio.Channel) -> None:
        nonlocal received
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for _ in pb_grpc.DeviceServiceStub(channel).ServerAudioStream(
                pb.AudioStreamRequest(start=True)
            ):
                if counting:
                    received += 1

    tasks = [asyncio.create_task(drain(c)) for c in channels]
    await asyncio.sleep(1.0)
    print("READY", flush=True)
    sys.stdin.readline()
    counting = True
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    counting = False
    elapsed = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()
    return {"packets": received, "elapsed": elapsed}


def main() -> None:
    kind, pki_dir, target, first, count, seconds = sys.argv[1:7]
    args = (Path(pki_dir), target, int(first), int(count), float(seconds))
    if kind == "baseline":
        result = asyncio.run(baseline(*args))
    else:
        result = asyncio.run(realtime(*args, int(sys.argv[7])))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
