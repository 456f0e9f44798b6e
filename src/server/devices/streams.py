"""DeviceService: the three device streams, wire-compatible with PROTOCOL.md.

Each handler attaches to the device's session through the registry, does its
work under ``session.guard`` (so a superseding connection or a shutdown ends
it), and detaches in ``finally`` (which also runs when the peer goes away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

import grpc
from google.protobuf.message import Message

from auth.errors import SessionSuperseded
from comms.audio_format import FRAME_MS
from comms.gen import comms_pb2 as pb
from comms.gen import comms_pb2_grpc as pb_grpc
from server import metrics
from server.access.interceptor import abort_rejected, current_auth
from server.audio.channel import WAIT, AudioChannel
from server.devices.controller import DeviceController
from server.devices.leds import LedFrame
from server.devices.live_session import DeviceSession, run_until_first
from server.devices.registry import STALLED_MESSAGE, DeviceRegistry
from server.errors import MalformedRequest, StoreUnavailable, StreamEnded

log = logging.getLogger(__name__)

STATUS_WINDOW = 4  # requests in flight before the server waits for the device's answers
# On close, how long the device may take to answer requests already sent. Ending the
# stream while its answer is in flight makes grpc clients report INTERNAL instead of
# our status (grpc/grpc#36066).
STATUS_DRAIN_S = 0.5
AUDIO_DRAIN_S = 0.5  # on close, time to flush queued audio (the final is_end packet)
RequestKind = Literal["get", "set"]
START_FALSE_TEXT = "AudioStreamRequest.start must be true: start=false opens no audio stream"
AUDIO_REPLACED_TEXT = "replaced by a newer audio stream of this session"
LINK_CHECK_S = 0.25  # while audio waits for a stalled link, how often the stall is looked at again
# What each button is on the case (PROTOCOL.md); logs say both this and the wire id.
BUTTON_NAMES = {0: "Connect", 1: "Mode", 2: "Stop", 3: "Play"}


def led_set_request(leds: LedFrame) -> pb.DeviceStatusRequest:
    """A SET for led_1..led_5. led_0 (power) is the device's: never set."""
    colours = leds.as_tuple()
    status_set = pb.DeviceStatusSet(
        **{f"led_{i + 1}": pb.RGBAColor(rgba=colour) for i, colour in enumerate(colours)}
    )
    return pb.DeviceStatusRequest(set=status_set)


GET_REQUEST = pb.DeviceStatusRequest(get=True)
WRITE_SETTLE_S = 1.0


async def write_whole(context: grpc.aio.ServicerContext, message: Message) -> None:
    """``context.write`` that a cancellation never cuts in half.

    Cancelling a write mid-flight leaves the call broken (the final status then
    reads INTERNAL). On cancel, let the write finish (bounded), then re-raise.
    """
    write = asyncio.ensure_future(context.write(message))
    try:
        await asyncio.shield(write)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(write, WRITE_SETTLE_S)
        raise


@dataclass(frozen=True)
class StreamPolicy:
    """How the device streams treat time (settings: status_poll_interval_s, audio_max_late_ms, ...)."""

    status_poll_s: float = 5.0
    audio_max_late_s: float = 0.2
    audio_write_timeout_s: float = 10.0
    link_stall_s: float = 3.0


class DeviceService(pb_grpc.DeviceServiceServicer):
    def __init__(self, registry: DeviceRegistry, policy: StreamPolicy) -> None:
        self._registry = registry
        self._policy = policy

    async def _run(
        self,
        kind: str,
        context: grpc.aio.ServicerContext,
        work: Callable[[DeviceController, DeviceSession], Coroutine[Any, Any, None]],
        linger_s: float = 0.0,
    ) -> None:
        """Attach to the device's session, run ``work`` until it ends or the session closes, detach."""
        auth = current_auth()
        assert auth.session_id is not None, "DeviceService calls are session-authenticated"
        try:
            controller, session = await self._registry.open_rpc(
                auth.identity, auth.session_id, auth.cert_serial, kind, auth.issuer_serial
            )
        except SessionSuperseded as exc:  # a newer session started since the interceptor looked
            await abort_rejected(
                context, exc, stream=kind, tenant=auth.identity.tenant, device=auth.identity.device_id
            )
        log.info("stream.open", extra={**session.log_fields, "stream": kind})
        outcome = "CANCELLED"  # the peer went away, unless we learn otherwise below
        ended: StreamEnded | None = None
        try:
            await context.send_initial_metadata(())  # the device learns at once that the stream is up
            await session.guard(work(controller, session), linger_s)
            outcome = session.close_code.name if session.closed else "OK"
        except StreamEnded as exc:  # on purpose: a newer audio stream, or the device stopped reading
            ended, outcome = exc, exc.code.name
            if exc.end_session:
                await self._registry.end_session(session.identity, exc.code, exc.message, exc.why)
        except (MalformedRequest, StoreUnavailable) as exc:  # not bugs: the interceptor answers them
            outcome = "INVALID_ARGUMENT" if isinstance(exc, MalformedRequest) else "UNAVAILABLE"
            raise
        except grpc.aio.AbortError:
            raise
        except grpc.aio.InternalError:
            # gRPC's core failed an operation on this call: its peer or connection is gone (a
            # device that gave up waiting, in a reconnect storm). Not a bug, and nobody is left
            # to tell: the stream just ends (after ``finally``).
            log.info("stream.broken", extra={**session.log_fields, "stream": kind})
            return
        except Exception:
            # A bug, not the device's fault: full story in the log, nothing internal on the wire.
            outcome = "INTERNAL"
            log.exception("stream.failed", extra={**session.log_fields, "stream": kind})
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server logged the details")
        finally:
            log.info("stream.end", extra={**session.log_fields, "stream": kind, "status": outcome})
            await self._registry.close_rpc(controller, session, kind)
        if ended is not None and not context.cancelled():  # a peer that left hears nothing more
            await context.abort(ended.code, ended.message)
        if session.closed and session.close_code != grpc.StatusCode.CANCELLED:
            # Ended by the server (superseded, shutdown): say why with a status.
            await context.abort(session.close_code, session.close_message)

    # --- StatusStream -------------------------------------------------------

    async def StatusStream(
        self,
        request_iterator: AsyncIterator[pb.DeviceStatusResponse],
        context: grpc.aio.ServicerContext,
    ) -> None:
        await self._run(
            "status",
            context,
            lambda c, s: self._status_exchange(c, s, request_iterator, context),
            linger_s=STATUS_DRAIN_S,
        )

    async def _status_exchange(
        self,
        controller: DeviceController,
        session: DeviceSession,
        responses: AsyncIterator[pb.DeviceStatusResponse],
        context: grpc.aio.ServicerContext,
    ) -> None:
        pending: deque[RequestKind] = deque()
        window = asyncio.Semaphore(STATUS_WINDOW)
        answered = asyncio.Event()

        async def send(kind: RequestKind, request: pb.DeviceStatusRequest) -> None:
            await window.acquire()
            if not pending:
                session.unanswered_since = asyncio.get_running_loop().time()
            pending.append(kind)
            await write_whole(context, request)

        async def write_requests() -> None:
            loop = asyncio.get_running_loop()
            session.leds_changed.clear()
            await send("set", led_set_request(controller.leds))  # first, or the device stalls
            next_poll = loop.time() + self._policy.status_poll_s
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, next_poll - loop.time())):
                        await session.leds_changed.wait()
                if session.closed:
                    while pending:  # bounded by the guard's linger
                        answered.clear()
                        await answered.wait()
                    return
                if session.leds_changed.is_set():
                    session.leds_changed.clear()
                    await send("set", led_set_request(controller.leds))  # latest state wins
                if loop.time() >= next_poll:
                    await send("get", GET_REQUEST)
                    next_poll = loop.time() + self._policy.status_poll_s

        async def read_responses() -> None:
            async for response in responses:
                kind = pending.popleft() if pending else None
                if kind is not None:
                    window.release()
                session.unanswered_since = asyncio.get_running_loop().time() if pending else None
                session.answered.set()
                answered.set()
                self._record_status(controller, session, kind, response)

        await run_until_first(write_requests(), read_responses())

    def _record_status(
        self,
        controller: DeviceController,
        session: DeviceSession,
        kind: RequestKind | None,
        response: pb.DeviceStatusResponse,
    ) -> None:
        which = response.WhichOneof("response")
        if kind == "get" and which == "state":
            state = response.state
            controller.remember_status(
                state.battery_level,
                (state.button_1, state.button_2, state.button_3, state.button_4),
            )
            return
        if kind == "set" and which == "status" and response.status == "success":
            return
        if kind == "set" and which == "status":
            problem = "device_error"
            detail = response.status[:200]
        elif kind is None:
            problem, detail = "unsolicited", f"response {which} with no request pending"
        else:
            problem, detail = "mismatch", f"{kind} answered with {which}"
        metrics.STATUS_ERRORS.labels(kind=problem).inc()
        log.warning("status.error", extra={**session.log_fields, "problem": problem, "detail": detail})

    # --- EventStream --------------------------------------------------------

    async def EventStream(
        self, request_iterator: AsyncIterator[pb.DeviceEvent], context: grpc.aio.ServicerContext
    ) -> None:
        await self._run("event", context, lambda c, s: self._ack_events(c, s, request_iterator, context))

    async def _ack_events(
        self,
        controller: DeviceController,
        session: DeviceSession,
        events: AsyncIterator[pb.DeviceEvent],
        context: grpc.aio.ServicerContext,
    ) -> None:
        async for event in events:
            stale = self._stale_event(controller, session)
            if stale is not None:
                # Not applied (the press would land late or on a session that is over); still acked.
                metrics.EVENTS_STALE.labels(reason=stale).inc()
                log.warning("event.stale", extra={**session.log_fields, "reason": stale})
                await write_whole(context, pb.DeviceEventResponse(ack=False))
                continue
            if not controller.events.take():
                # Over the rate limit: still acked, in order, so the device's loop never freezes.
                metrics.EVENTS_RATE_LIMITED.inc()
                await write_whole(context, pb.DeviceEventResponse(ack=False))
                continue
            if event.WhichOneof("event") == "button_event":
                button = event.button_event
                metrics.BUTTON_EVENTS.labels(
                    button=_label(pb.ButtonEvent.ButtonId, button.button_id),
                    type=_label(pb.ButtonEvent.ButtonEventType, button.event),
                ).inc()
                log.info(
                    "event.button",
                    extra={
                        **session.log_fields,
                        "button": BUTTON_NAMES.get(button.button_id, "unknown"),
                        "button_id": _label(pb.ButtonEvent.ButtonId, button.button_id),
                        "type": _label(pb.ButtonEvent.ButtonEventType, button.event),
                    },
                )
                await controller.press(button.button_id, button.event)
                if button.event == pb.ButtonEvent.PRESS:
                    name = BUTTON_NAMES.get(button.button_id, "unknown")
                    self._registry.listener.device_event(controller, f"press {name}")
            else:
                log.warning("event.empty", extra=session.log_fields)
            await write_whole(context, pb.DeviceEventResponse(ack=True))  # one ack per event, in order

    def _stale_event(self, controller: DeviceController, session: DeviceSession) -> str | None:
        """Why an event that just arrived must not change state, or None to apply it.

        ``session``: the event's session is no longer the device's live one (superseded,
        ended). ``stalled``: the link is stalled (``DeviceSession.stalled``): the bytes of
        this event were held on the way, it was sent long ago, and the device has given
        up on its ack by now. Either way the press would land late: ack false, not applied.
        """
        if session.closed or controller.session is not session:
            return "session"
        if session.stalled(self._policy.link_stall_s):
            return "stalled"
        return None

    # --- ServerAudioStream --------------------------------------------------

    async def ServerAudioStream(
        self, request: pb.AudioStreamRequest, context: grpc.aio.ServicerContext
    ) -> None:
        auth = current_auth()
        if not request.start:
            # Devices always send start=true; anything else asks for no audio, so none is started.
            log.warning(
                "audio.start_false", extra={"tenant": auth.identity.tenant, "device": auth.identity.device_id}
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, START_FALSE_TEXT)
        frame_ms = auth.claims.frame_ms if auth.claims is not None else FRAME_MS
        await self._run(
            "audio",
            context,
            lambda c, s: _stream_audio(c, s, context, self._policy, frame_ms),
            linger_s=AUDIO_DRAIN_S,
        )


async def _stream_audio(
    controller: DeviceController,
    session: DeviceSession,
    context: grpc.aio.ServicerContext,
    policy: StreamPolicy,
    frame_ms: int = FRAME_MS,
) -> None:
    """Hand the player's packets to gRPC one write at a time (the player paces, the channel skips
    what is already too late). A write that does not complete within ``audio_write_timeout_s``
    means the device stopped reading: the registry's watchdog ends its session (UNAVAILABLE).

    When the session closes, what is queued (the final ``is_end``) still goes out first.
    """
    loop = asyncio.get_running_loop()
    channel = AudioChannel(max_late_s=policy.audio_max_late_s)
    controller.player.frame_ms = frame_ms  # sounds started from now on: this stream's packet duration
    replaced = controller.player.attach(channel)
    if replaced is not None:  # exactly one audio stream per session receives packets
        log.info("audio.replaced", extra=session.log_fields)
        replaced.close(replaced_by_newer=True)
    session.on_close(channel.close)
    try:
        while True:
            if session.unanswered_since is not None:  # a status request is out: is the link stalled?
                await _wait_for_link(session, policy, len(channel))
            # Taken without waiting when one is due (the usual case: no coroutine per packet);
            # after the link wait, so what went stale meanwhile is skipped.
            packet = channel.pop(loop.time())
            if packet is WAIT:
                packet = await channel.get()
            if not isinstance(packet, pb.AudioPacket):
                break  # None: the channel closed and drained
            # A plain write, never cancelled mid-flight: closing ends this loop through the channel.
            # The registry's watchdog samples the two counters: a write begun and not done for
            # longer than the write timeout ends the session.
            session.audio_writes_begun += 1
            await context.write(packet)
            session.audio_writes_done += 1
    finally:
        controller.player.detach(channel)
    if channel.replaced:
        raise StreamEnded(grpc.StatusCode.ABORTED, AUDIO_REPLACED_TEXT)


async def _wait_for_link(session: DeviceSession, policy: StreamPolicy, queued: int) -> None:
    """While the link is stalled, hand gRPC nothing: packets wait in the channel (and go stale
    there, to be skipped), instead of piling up unseen in gRPC's and the kernel's buffers.
    A link stalled for longer than ``audio_write_timeout_s`` ends the session."""
    if not session.stalled(policy.link_stall_s):
        return
    loop = asyncio.get_running_loop()
    paused_at = loop.time()
    log.warning("audio.paused", extra={**session.log_fields, "reason": "link stalled", "queued": queued})
    while session.stalled(policy.link_stall_s) and not session.closed:
        if loop.time() - paused_at > policy.audio_write_timeout_s:
            raise StreamEnded(grpc.StatusCode.UNAVAILABLE, STALLED_MESSAGE, end_session=True, why="stalled")
        session.answered.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINK_CHECK_S):
                await session.answered.wait()
    log.info("audio.resumed", extra={**session.log_fields, "paused_s": round(loop.time() - paused_at, 2)})


def _label(enum: object, value: int) -> str:
    try:
        return str(enum.Name(value))  # type: ignore[attr-defined]
    except ValueError:
        return "unknown"
