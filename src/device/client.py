"""A device's connection to the server: one mTLS channel, the three DeviceService streams.

It behaves exactly like devices in the field (PROTOCOL.md): answers each
status request with one response, sends one event and waits for its ack,
decodes every audio packet as one Opus packet. The Pi client builds its GPIO,
playback and reconnect logic on top of this class.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import grpc
import opuslib

from auth.tls import TlsMaterial, channel_credentials
from comms.audio_format import CHANNELS, MAX_FRAME_SAMPLES, SAMPLE_RATE
from comms.gen import comms_pb2 as pb
from comms.gen import comms_pb2_grpc as pb_grpc
from comms.gen import renew_pb2 as rpb
from comms.gen import renew_pb2_grpc as rpb_grpc
from comms.gen import session_pb2 as spb
from comms.gen import session_pb2_grpc as spb_grpc
from device.audio_sink import AudioSink

log = logging.getLogger(__name__)

LED_COUNT = 6
ACK_TIMEOUT_S = 5.0
# A dead server or a blackholed link is noticed within KEEPALIVE + KEEPALIVE_TIMEOUT (~10 s).
# Pings every 5 s stay above the server's minimum ping interval (4 s by default).
KEEPALIVE_MS = 5_000
KEEPALIVE_TIMEOUT_MS = 5_000
SUCCESS = "success"


class AudioHandler(Protocol):
    def on_packet(self, packet: pb.AudioPacket) -> None: ...


@dataclass
class StreamEnd:
    """How a stream ended: gRPC code and details (OK when the server closed it cleanly)."""

    code: grpc.StatusCode
    details: str


@dataclass
class DeviceView:
    """What the device shows and knows: LED colours (0xRRGGBBAA), buttons, battery."""

    leds: list[int] = field(default_factory=lambda: [0] * LED_COUNT)
    buttons: list[int] = field(default_factory=lambda: [pb.DeviceStatus.RELEASED] * 4)
    battery_level: float = 1.0
    history: list[tuple[float, tuple[int, ...]]] = field(default_factory=list)


class DeviceClient:
    """Use as ``async with DeviceClient(...) as client: await client.press(...)``."""

    def __init__(
        self,
        target: str,
        tls: TlsMaterial,
        sink: AudioSink,
        *,
        legacy_device_id: str | None = None,
        on_leds: Callable[[list[int]], None] | None = None,
        server_name: str | None = None,
        audio: AudioHandler | None = None,
        keepalive_ms: tuple[int, int] = (KEEPALIVE_MS, KEEPALIVE_TIMEOUT_MS),
        max_frame_ms: int = 0,
        resume: spb.CreateSessionResponse | None = None,
    ) -> None:
        self.target = target
        self.view = DeviceView()
        self.ends: dict[str, StreamEnd] = {}
        self.closed = asyncio.Event()  # set when any stream ends
        self.ready = asyncio.Event()  # set at the first status request: the server has our streams
        self.audio_ended = asyncio.Event()  # the audio stream ended (e.g. moved to a renewed connection)
        self._tls = tls
        self.sink = sink
        self._legacy = (("device_id", legacy_device_id),) if legacy_device_id else ()
        # ``resume``: a session to join (its token bound to this client's certificate, from a
        # renewal) instead of creating one: the streams attach to the session already playing.
        self.session: spb.CreateSessionResponse | None = resume
        self._on_leds = on_leds
        self._server_name = server_name
        self._channel: grpc.aio.Channel | None = None
        self._events: grpc.aio.StreamStreamCall | None = None
        self._event_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._decoder = opuslib.Decoder(SAMPLE_RATE, CHANNELS)
        self._audio = audio
        self._keepalive_ms = keepalive_ms
        self.max_frame_ms = max_frame_ms  # 0: say nothing, like fielded firmware (20 ms packets)
        self.packets_received = 0
        self.status_requests = 0

    async def __aenter__(self) -> DeviceClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _auth_metadata(self) -> tuple[tuple[str, str], ...]:
        token = (("authorization", f"Bearer {self.session.token}"),) if self.session else ()
        return (*token, *self._legacy)

    async def create_session(self, refresh: bool = False) -> spb.CreateSessionResponse:
        """CreateSession (mTLS); with ``refresh`` the current token is sent and the session kept."""
        assert self._channel is not None, "not connected"
        stub = spb_grpc.SessionServiceStub(self._channel)
        metadata = self._auth_metadata() if refresh else self._legacy
        self.session = await stub.CreateSession(
            spb.CreateSessionRequest(max_frame_ms=self.max_frame_ms), metadata=metadata, timeout=ACK_TIMEOUT_S
        )
        return self.session

    async def _refresh_tokens(self) -> None:
        """Keep a fresh token (streams already open outlive it; new streams need it)."""
        while self.session is not None:
            await asyncio.sleep(max(1.0, self.session.refresh_after_unix - time.time()))
            await self.create_session(refresh=True)
            log.info("device.token_refreshed", extra={"session": self.session.session_id})

    async def connect(self) -> None:
        """Open the channel, create a session, start all three RPCs at once (like the firmware)."""
        options = [
            ("grpc.keepalive_time_ms", self._keepalive_ms[0]),
            ("grpc.keepalive_timeout_ms", self._keepalive_ms[1]),
            ("grpc.http2.ping_timeout_ms", self._keepalive_ms[1]),  # governs every ping's ack wait
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),  # an idle device keeps checking its link
        ]
        if self._server_name:
            options.append(("grpc.ssl_target_name_override", self._server_name))  # type: ignore[arg-type]
        self._channel = grpc.aio.secure_channel(self.target, channel_credentials(self._tls), options=options)
        if self.session is None:
            await self.create_session()
        metadata = self._auth_metadata()
        stub = pb_grpc.DeviceServiceStub(self._channel)
        status = stub.StatusStream(metadata=metadata)
        self._events = stub.EventStream(metadata=metadata)
        audio = stub.ServerAudioStream(pb.AudioStreamRequest(start=True), metadata=metadata)
        self._tasks = [
            asyncio.create_task(self._watch("session", lambda _: self._refresh_tokens(), None)),
            asyncio.create_task(self._watch("status", self._answer_status, status)),
            asyncio.create_task(self._watch("audio", self._play_audio, audio)),
            asyncio.create_task(self._event_outcome(self._events)),
        ]

    async def _watch(self, kind: str, work: Callable[[Any], Coroutine[Any, Any, None]], call: Any) -> None:
        try:
            await work(call)
            self.ends.setdefault(kind, StreamEnd(grpc.StatusCode.OK, "stream ended"))
        except grpc.aio.AioRpcError as exc:
            self.ends.setdefault(kind, StreamEnd(exc.code(), exc.details() or ""))
        if kind == "audio":
            self.audio_ended.set()
        self.closed.set()

    async def _event_outcome(self, call: grpc.aio.StreamStreamCall) -> None:
        """The event stream is read by ``press``; this only records how it ends."""
        code = await call.code()
        self.ends.setdefault("event", StreamEnd(code, await call.details() or ""))
        self.closed.set()

    async def _answer_status(self, call: grpc.aio.StreamStreamCall) -> None:
        while True:
            request = await call.read()
            if request is grpc.aio.EOF:
                return
            self.status_requests += 1
            self.ready.set()
            await call.write(self._status_response(request))

    def _status_response(self, request: pb.DeviceStatusRequest) -> pb.DeviceStatusResponse:
        which = request.WhichOneof("request")
        if which == "get":
            state = pb.DeviceStatus(battery_level=self.view.battery_level)
            for i, colour in enumerate(self.view.leds):
                getattr(state, f"led_{i}").rgba = colour
            for i, pressed in enumerate(self.view.buttons):
                setattr(state, f"button_{i + 1}", pressed)
            return pb.DeviceStatusResponse(state=state)
        if which == "set":
            for i in range(1, LED_COUNT):  # led_0 is ours (power): server sets are ignored
                field_name = f"led_{i}"
                if request.set.HasField(field_name):
                    self.view.leds[i] = getattr(request.set, field_name).rgba
            self.view.history.append((time.monotonic(), tuple(self.view.leds)))
            if self._on_leds:
                self._on_leds(list(self.view.leds))
            return pb.DeviceStatusResponse(status=SUCCESS)
        return pb.DeviceStatusResponse(status="error: empty request")

    async def _play_audio(self, call: grpc.aio.UnaryStreamCall) -> None:
        async for packet in call:
            self.packets_received += 1
            if self._audio is not None:  # e.g. the Pi's jitter-buffered player
                self._audio.on_packet(packet)
                continue
            if packet.is_start:
                self._decoder = opuslib.Decoder(SAMPLE_RATE, CHANNELS)
                self.sink.start_sound()
            pcm = self._decoder.decode(packet.data, MAX_FRAME_SAMPLES)  # 20 or 60 ms
            self.sink.write(pcm, packet.is_end)
            if packet.is_end:
                self.sink.end_sound()

    async def renew(self, csr: bytes) -> rpb.RenewResponse:
        """RenewalService.Renew over this connection: our certificate and session token vouch."""
        assert self._channel is not None, "not connected"
        return await rpb_grpc.RenewalServiceStub(self._channel).Renew(
            rpb.RenewRequest(csr=csr), metadata=self._auth_metadata(), timeout=ACK_TIMEOUT_S * 2
        )

    async def press(
        self, button: int, kind: int = pb.ButtonEvent.PRESS, timeout: float = ACK_TIMEOUT_S
    ) -> pb.DeviceEventResponse:
        """Send one button event and wait for its ack (the device's button loop blocks likewise)."""
        assert self._events is not None, "not connected"
        async with self._event_lock, asyncio.timeout(timeout):
            event = pb.ButtonEvent(
                button_id=cast("pb.ButtonEvent.ButtonId", button),  # raw wire values, unknown ones too
                event=cast("pb.ButtonEvent.ButtonEventType", kind),
            )
            await self._events.write(pb.DeviceEvent(button_event=event))
            response = await self._events.read()
        if response is grpc.aio.EOF:
            raise ConnectionError("event stream closed before the ack")
        return response

    async def close(self) -> None:
        # One task at a time: each ends its gRPC call before the next is cancelled. Cancelling
        # them all at once (cancel_and_wait) left sockets behind in the churn test (fd count).
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
