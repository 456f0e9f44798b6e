"""A lean device for the load-generator processes: speaks the protocol, counts packets, no decode.

It never raises out of its stream tasks: a stream the server ends (or a write on a call already
finished, grpc.aio's ``InvalidStateError: RPC already finished``) marks the device ``lost`` with
the status code, and a press that cannot be delivered returns False, so an overloaded server is
counted, not turned into a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import grpc

from auth import pki
from auth.identity import Identity
from auth.tls import TlsMaterial, channel_credentials
from comms.gen import comms_pb2 as pb
from comms.gen import comms_pb2_grpc as pb_grpc
from comms.gen import session_pb2 as spb
from comms.gen import session_pb2_grpc as spb_grpc

LATE_S = 0.050
SUCCESS = pb.DeviceStatusResponse(status="success")
MODE, STOP, PLAY = 1, 2, 3
CALL_ENDED = (grpc.aio.AioRpcError, asyncio.InvalidStateError)  # the server ended the call


def tls(pki_dir: Path, index: int) -> TlsMaterial:
    cert, key = pki.device_paths(pki_dir, Identity("bench", f"d{index:04d}"))
    return TlsMaterial(cert.read_bytes(), key.read_bytes(), (pki_dir / pki.CA_CERT).read_bytes())


def reason(exc: BaseException) -> str:
    """What failed, in a word: the gRPC status code, or the exception's type."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return str(exc.code().name)
    return "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__


class Device:
    def __init__(self, target: str, material: TlsMaterial, frame_ms: int = 20) -> None:
        self.channel = grpc.aio.secure_channel(target, channel_credentials(material))
        self.frame_s = frame_ms / 1000
        self.frame_ms = frame_ms
        self.packets = 0
        self.late = 0
        self.status_answered = 0
        self.streaming = asyncio.Event()  # the server asked for the first status: streams are up
        self.gone = asyncio.Event()  # a stream ended without us closing it
        self.lost_code = ""
        self._closing = False
        self._schedule = float("inf")  # when packet 0 of the playing sound was due here (the earliest seen)
        self._index = 0
        self._waiting: dict[str, asyncio.Future[float]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def lost(self) -> bool:
        return self.gone.is_set()

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

    async def open(self, timeout_s: float, play: bool = False) -> str | None:
        """CreateSession and the three streams (and, with ``play``, Play until the first packet,
        then Stop); None when done within ``timeout_s``, else why not."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.start()
                await first_set(self.streaming, self.gone)
                if play and not self.lost:
                    started = self.expect("start")
                    if not await self.press(PLAY):
                        return "Play not delivered"
                    await first_of(started, self.gone)
                    await self.press(STOP)
        except Exception as exc:
            return reason(exc)
        return f"stream ended ({self.lost_code})" if self.lost else None

    async def _answer(self) -> None:
        try:
            while (request := await self.status.read()) is not grpc.aio.EOF:
                self.streaming.set()
                await self.status.write(
                    SUCCESS if request.HasField("set") else pb.DeviceStatusResponse(state=pb.DeviceStatus())
                )
                self.status_answered += 1
        except CALL_ENDED as exc:
            self._lose(exc)
        except asyncio.CancelledError:
            pass
        else:
            self._lose(None)

    async def _listen(self) -> None:
        try:
            async for packet in self.audio:
                now = time.perf_counter()
                if packet.is_start:
                    self._schedule, self._index = now, 0
                    self._resolve("start", now)
                else:
                    self._index += 1
                if packet.is_end:
                    self._resolve("end", now)
                self.packets += 1
                # The sound's schedule here: as early as any of its packets arrived (the lead's
                # packets come early); a packet arriving more than LATE_S behind it is late.
                at = now - self._index * self.frame_s
                self._schedule = min(self._schedule, at)
                if at - self._schedule > LATE_S:
                    self.late += 1
        except CALL_ENDED as exc:
            self._lose(exc)
        except asyncio.CancelledError:
            pass
        else:
            self._lose(None)

    def _lose(self, exc: BaseException | None) -> None:
        if not self._closing and not self.gone.is_set():
            self.lost_code = reason(exc) if exc is not None else "EOF"
            self.gone.set()

    def _resolve(self, kind: str, now: float) -> None:
        waiter = self._waiting.pop(kind, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(now)

    def rebase(self) -> None:
        """Take the sound's schedule afresh from the next packet on: lateness per measured window.
        The server skips packets that are too late (its live edge) and the device cannot see
        which: after a skip every packet would stay "behind" the old schedule for good."""
        self._schedule = float("inf")

    def expect(self, kind: str) -> asyncio.Future[float]:
        self._waiting[kind] = asyncio.get_running_loop().create_future()
        return self._waiting[kind]

    async def press(self, button: int) -> bool:
        """Send a press and read its ack; False when the event stream has ended."""
        try:
            await self.events.write(pb.DeviceEvent(button_event=pb.ButtonEvent(button_id=button)))  # type: ignore[arg-type]
            return await self.events.read() is not grpc.aio.EOF
        except CALL_ENDED:
            return False

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.channel.close()


async def first_set(*events: asyncio.Event) -> None:
    """Until any of ``events`` is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


async def first_of(future: asyncio.Future[float], gone: asyncio.Event) -> None:
    """Until ``future`` resolves or the device is gone."""
    lost: asyncio.Future[object] = asyncio.ensure_future(gone.wait())
    waits: set[asyncio.Future[object]] = {future, lost}  # type: ignore[arg-type]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        lost.cancel()
