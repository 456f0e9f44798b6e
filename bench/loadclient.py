"""A lean load-generating device for benchmarks: speaks the protocol, counts packets, no decode.

The real device decodes every packet; a load generator that did too would
measure its own CPU, not the server's. Arrival times are recorded instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from auth import pki
from auth.identity import Identity
from auth.keys import create_signing_key
from auth.tls import TlsMaterial, channel_credentials
from comms.audio_format import FRAME_SECONDS
from comms.gen import comms_pb2 as pb
from comms.gen import comms_pb2_grpc as pb_grpc
from comms.gen import session_pb2 as spb
from comms.gen import session_pb2_grpc as spb_grpc

MODE, STOP, PLAY = 1, 2, 3
# The server ended the call: grpc.aio raises either (a write on a finished call: "RPC already finished").
CALL_ENDED = (grpc.aio.AioRpcError, asyncio.InvalidStateError)
SUCCESS = pb.DeviceStatusResponse(status="success")


def make_pki(root: Path, devices: int) -> tuple[Path, list[TlsMaterial]]:
    """CA + localhost server cert on disk; ``devices`` device credentials in memory."""
    ca = pki.create_ca("Bench CA")
    server = pki.issue_server_cert(ca, ["localhost"], ["127.0.0.1"])
    pki.write_certified_key(ca, root / pki.CA_CERT, root / pki.CA_KEY, force=True)
    pki.write_certified_key(server, root / pki.SERVER_CERT, root / pki.SERVER_KEY, force=True)
    create_signing_key(root / "signing")
    creds = []
    for i in range(devices):
        device = pki.issue_device_cert(ca, Identity("bench", f"d{i:04d}"))
        creds.append(TlsMaterial(device.cert_pem(), device.key_pem(), ca.cert_pem()))
    return root, creds


@dataclass
class Sound:
    first: float
    count: int = 1
    late: int = 0  # packets more than one frame behind the sound's own schedule
    ended: float | None = None


@dataclass
class LoadDevice:
    target: str
    tls: TlsMaterial
    sounds: list[Sound] = field(default_factory=list)
    packets: int = 0
    _waiters: list[tuple[str, asyncio.Future[float]]] = field(default_factory=list)

    async def start(self) -> None:
        self._channel = grpc.aio.secure_channel(self.target, channel_credentials(self.tls))
        session = await spb_grpc.SessionServiceStub(self._channel).CreateSession(spb.CreateSessionRequest())
        metadata = (("authorization", f"Bearer {session.token}"),)
        stub = pb_grpc.DeviceServiceStub(self._channel)
        self._status = stub.StatusStream(metadata=metadata)
        self._events = stub.EventStream(metadata=metadata)
        self._audio = stub.ServerAudioStream(pb.AudioStreamRequest(start=True), metadata=metadata)
        self._tasks = [asyncio.create_task(self._answer()), asyncio.create_task(self._listen())]
        await self._channel.channel_ready()

    async def _answer(self) -> None:
        with contextlib.suppress(*CALL_ENDED):
            while (request := await self._status.read()) is not grpc.aio.EOF:
                await self._status.write(
                    SUCCESS
                    if request.HasField("set")
                    else pb.DeviceStatusResponse(state=pb.DeviceStatus(battery_level=1.0))
                )

    async def _listen(self) -> None:
        with contextlib.suppress(*CALL_ENDED):
            async for packet in self._audio:
                now = time.perf_counter()
                self.packets += 1
                if packet.is_start or not self.sounds:
                    self.sounds.append(Sound(now))
                    self._wake("start", now)
                else:
                    sound = self.sounds[-1]
                    sound.count += 1
                    if now - sound.first > (sound.count - 1) * FRAME_SECONDS + FRAME_SECONDS:
                        sound.late += 1
                if packet.is_end:
                    self.sounds[-1].ended = now
                    self._wake("end", now)

    def _wake(self, kind: str, now: float) -> None:
        for waiter in [w for w in self._waiters if w[0] == kind]:
            self._waiters.remove(waiter)
            if not waiter[1].done():
                waiter[1].set_result(now)

    def expect(self, kind: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append((kind, future))
        return future

    async def press(self, button: int) -> None:
        await self._events.write(pb.DeviceEvent(button_event=pb.ButtonEvent(button_id=button)))  # type: ignore[arg-type]
        await self._events.read()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._channel.close()
