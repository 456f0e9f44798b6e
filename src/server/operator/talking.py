"""FleetService's ``Talk`` (issue 21): push-to-talk, a client stream of 20 ms PCM frames.

A mixin of ``FleetAdmin`` beside ``GroupCalls`` (it reuses that class's
targets: a selector or device ids, tenant-scoped), so a talk is role-checked,
scoped and audited like every other call. The console's WebSocket runs the same
handler in-process (``talk``). One audit event per talk: operator, targets,
start, duration, frames, outcome, and why it ended (released, max_length,
bad_frame, caller_gone, or the refusal).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence

import grpc

from comms.audio_format import SAMPLE_RATE, SAMPLES_PER_FRAME
from comms.gen import admin_pb2 as apb
from server.access.interceptor import OperatorCall, acting_as
from server.announce.plan import MAX_PRIORITY
from server.announce.talk import FRAME_BYTES, Talks
from server.announce.talk import Talk as LiveTalk
from server.operator.calls import ApiError, LocalContext, Note, OperatorCalls

AUDIT_IDS = 100
INVALID = grpc.StatusCode.INVALID_ARGUMENT
FIRST_TEXT = "the first message of a talk names its targets (start); PCM frames follow"
FRAME_TEXT = (
    f"a talk frame is 20 ms of 48 kHz mono 16-bit PCM: {FRAME_BYTES} bytes ({SAMPLES_PER_FRAME} samples)"
)
Metadata = Sequence[tuple[str, str]]


def outcome_metadata(talk: LiveTalk) -> Metadata:
    """The outcome as the talk starts (gRPC initial metadata; the console's first message)."""
    outcome = talk.outcome
    kinds = {"started": outcome.started, "busy": outcome.busy, "offline": outcome.offline}
    counts = [(f"talk-{name}", str(len(ids))) for name, ids in {**kinds, "refused": outcome.refused}.items()]
    return [("talk-id", talk.id), ("talk-targeted", str(talk.targeted)), *counts]


def result_proto(talk: LiveTalk, ended: str) -> apb.TalkResult:
    outcome = talk.outcome
    return apb.TalkResult(
        talk_id=talk.id,
        start_unix=talk.start_unix,
        targeted=talk.targeted,
        started=outcome.started,
        offline=outcome.offline,
        busy=outcome.busy,
        refused=outcome.refused,
        seconds=talk.seconds,
        frames=talk.frames,
        ended=ended,
    )


class TalkContext(LocalContext):
    """The in-process context of a console talk: the outcome is handed to ``on_started``."""

    def __init__(self, on_started: Callable[[Metadata], Awaitable[None]]) -> None:
        self._on_started = on_started

    async def send_initial_metadata(self, metadata: Metadata) -> None:
        await self._on_started(metadata)


class TalkCalls:
    """``Talk`` for ``FleetAdmin``."""

    calls: OperatorCalls
    talks: Talks
    talk_max_s: float

    def _one_tenant(self, call: OperatorCall, requested: str, note: Note) -> str:
        raise NotImplementedError  # FleetAdmin's

    async def _targets(
        self, tenant: str, request: apb.AnnounceRequest | apb.TalkStart, note: Note
    ) -> list[str]:
        raise NotImplementedError  # GroupCalls'

    async def talk(
        self,
        call: OperatorCall,
        requests: AsyncIterable[apb.TalkRequest],
        on_started: Callable[[Metadata], Awaitable[None]],
    ) -> apb.TalkResult:
        """``Talk`` in-process (the console): the same role check, scope and audit. Raises
        ``ApiError``."""
        await self.calls.authorise(call, "Talk")
        with acting_as(call):
            return await self.Talk(requests, TalkContext(on_started))

    async def Talk(
        self, request_iterator: AsyncIterable[apb.TalkRequest], context: grpc.aio.ServicerContext
    ) -> apb.TalkResult:
        async def work(call: OperatorCall, note: Note) -> apb.TalkResult:
            stream = aiter(request_iterator)
            first = await anext(stream, None)
            if first is None or first.WhichOneof("part") != "start":
                raise ApiError(INVALID, FIRST_TEXT)
            start = first.start
            tenant = self._one_tenant(call, start.tenant, note)
            note.parameters.update(priority=start.priority, resume=not start.no_resume)
            if start.priority > MAX_PRIORITY:
                raise ApiError(INVALID, f"priority {start.priority} is outside 0..{MAX_PRIORITY}")
            if start.sample_rate not in (0, SAMPLE_RATE):
                raise ApiError(
                    INVALID, f"talk frames are {SAMPLE_RATE} Hz, not {start.sample_rate}: resample them first"
                )
            devices = await self._targets(tenant, start, note)
            talk = await self.talks.open(tenant, devices, start.priority, not start.no_resume)
            note.parameters.update(
                talk=talk.id,
                targeted=len(devices),
                start_unix=round(talk.start_unix, 3),
                **{name: len(ids) for name, ids in talk.outcome.to_data().items()},
                **{f"{name}_ids": ids[:AUDIT_IDS] for name, ids in talk.outcome.to_data().items() if ids},
            )
            ended, cancelled = "refused", ""
            try:
                await context.send_initial_metadata(outcome_metadata(talk))
                if not talk.outcome.started:
                    if talk.outcome.busy:
                        raise ApiError(
                            grpc.StatusCode.FAILED_PRECONDITION,
                            "busy: every targeted device that is online is in another talk "
                            f"({', '.join(talk.outcome.busy[:5])})",
                        )
                    ended = "nobody"  # a clear "0 devices started" result, not an error
                    return result_proto(talk, ended)
                ended = await self._stream(talk, stream)
                return result_proto(talk, ended)
            except ApiError as exc:
                ended = "bad_frame" if exc.message.startswith((FRAME_TEXT, FIRST_TEXT)) else ended
                raise
            except asyncio.CancelledError:
                ended = cancelled = "caller_gone"
                raise
            finally:  # no await before the audit: a cancel lands at the first one
                talk.end()
                note.parameters.update(ended=ended, seconds=talk.seconds, frames=talk.frames)
                if cancelled:  # calls.run audits the rest; this one unwinds as a cancel
                    await self.calls.cancelled(call, "Talk", note)

        return await self.calls.run(context, "Talk", work, changes=True)

    async def _stream(self, talk: LiveTalk, stream: AsyncIterator[apb.TalkRequest]) -> str:
        """Frames to the devices until the caller stops (or the maximum length); why it ended."""
        try:
            async with asyncio.timeout(self.talk_max_s):
                async for message in stream:
                    part = message.WhichOneof("part")
                    if part == "end":
                        return "released"
                    if part != "pcm":
                        raise ApiError(INVALID, FIRST_TEXT)
                    if len(message.pcm) != FRAME_BYTES:
                        raise ApiError(INVALID, f"{FRAME_TEXT}, not {len(message.pcm)}")
                    await talk.send(message.pcm)
        except TimeoutError:
            return "max_length"
        return "caller_gone"  # the stream stopped without its end: a cancel, or a client that died
