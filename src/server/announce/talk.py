"""Push-to-talk: a live announcement, its sound streamed as the operator speaks (issue 21).

The node that takes a talk (``Talks.open``, called by the operator layer for
the gRPC ``Talk`` call and the console's WebSocket) looks the targets up in
presence like ``Announcer`` does, starts its own devices and sends every other
node holding targets a ``TALK`` on its bus channel; each node answers with its
outcome (``TALKED``). Then, for each 20 ms PCM frame, the caller's node encodes
it to Opus once for the whole talk and publishes the packet (``TALK_AUDIO``) to
the nodes whose devices started; no store is written per packet. Each node
appends the packets to its one ``LiveFeed`` shared by its devices, which push
each packet to their streams as it arrives. ``TALK_END`` (the operator let go,
the maximum length, a bad frame, the caller gone) ends the feed: ``is_end`` on
every device, and the sound the talk interrupted resumes as after an
announcement.

A node whose talk hears nothing for ``IDLE_END_S`` ends it by itself: a caller
or a caller's node that vanished without a word never leaves a device hanging
in a talk for more than a second. The bus messages carry the talk id as their
``device`` (no tenant: the fleet's handler ignores them), so the per-key
dispatch keeps one talk's packets in order.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from auth.identity import Identity
from comms.audio_format import SAMPLES_PER_FRAME
from server.announce.plan import Outcome
from server.audio.live import LiveFeed
from server.audio.opus import new_encoder
from server.devices.cue import BUSY, OFFLINE, STARTED, Cue
from server.devices.registry import DeviceRegistry
from server.errors import describe
from server.fleet.bus import BusMessage
from server.fleet.node import Fleet, shared_io
from server.supervision import TaskOwner

log = logging.getLogger(__name__)

TALK, TALKED, TALK_AUDIO, TALK_END = "talk", "talked", "talk-audio", "talk-end"  # bus kinds
FRAME_BYTES = SAMPLES_PER_FRAME * 2  # one 20 ms frame of 48 kHz mono int16 PCM
ANSWER_S = 2.0  # how long the caller's node waits for the other nodes' outcomes
IDLE_END_S = 1.0  # a node's talk that hears nothing this long ends there


@dataclass(frozen=True)
class TalkPlan:
    id: str
    tenant: str
    priority: int
    resume: bool

    def to_data(self) -> dict[str, object]:
        return {"id": self.id, "tenant": self.tenant, "priority": self.priority, "resume": self.resume}

    @classmethod
    def from_data(cls, data: dict[str, object]) -> TalkPlan:
        return cls(str(data["id"]), str(data["tenant"]), int(str(data["priority"])), bool(data["resume"]))


@dataclass
class _NodeTalk:
    """This node's part of a talk: the feed its devices play, and when it last heard a packet."""

    plan: TalkPlan
    feed: LiveFeed
    heard_at: float
    origin: str


@dataclass
class Talk:
    """The caller's side of one talk (from ``Talks.open``): send frames, then ``end``."""

    plan: TalkPlan
    targeted: int
    outcome: Outcome
    start_unix: float
    _talks: Talks
    _nodes: list[str]  # other nodes whose devices started
    _local: bool  # devices of this node started
    frames: int = 0
    ended: bool = False
    _encoder: object = field(default=None, repr=False)
    _publish_failed: bool = False

    @property
    def id(self) -> str:
        return self.plan.id

    @property
    def seconds(self) -> float:
        return round(time.time() - self.start_unix, 3)

    async def send(self, pcm: bytes) -> None:
        """One 20 ms frame (``FRAME_BYTES`` of PCM; the caller checks the size) to every device."""
        if self.ended:
            return
        if self._encoder is None:
            self._encoder = new_encoder(self._talks.bitrate)
        packet = bytes(self._encoder.encode(pcm, SAMPLES_PER_FRAME))  # type: ignore[attr-defined]
        self.frames += 1
        if self._local:
            self._talks.heard(self.id, [packet])
        if self._nodes:
            data: dict[str, object] = {"talk": self.id, "packets": [base64.b64encode(packet).decode()]}
            await self._publish(TALK_AUDIO, data)

    def end(self) -> None:
        """The talk is over (idempotent): ``is_end`` on every device. Nothing to await: it also
        runs as a cancelled call unwinds (the other nodes are told in a task of ``Talks``)."""
        if self.ended:
            return
        self.ended = True
        if self._local:
            self._talks.finish(self.id)
        if self._nodes:
            self._talks.spawn(self._publish(TALK_END, {"talk": self.id}), f"talk-end-{self.id[:12]}")

    async def _publish(self, kind: str, data: dict[str, object]) -> None:
        message = BusMessage(kind, self._talks.node_id, device=self.id, data=data)
        for node in self._nodes:
            try:
                await self._talks.bus_publish(message, node)
            except (RedisError, OSError) as exc:  # the nodes' idle rule ends their part if it lasts
                if not self._publish_failed:
                    log.warning("talk.publish_failed", extra={"talk": self.id, "error": describe(exc)})
                self._publish_failed = True


class Talks:
    """Every talk of this node: those it takes from callers and its part of everyone's."""

    def __init__(
        self, fleet: Fleet, registry: DeviceRegistry, bitrate: int, idle_end_s: float = IDLE_END_S
    ) -> None:
        self._fleet = fleet
        self._registry = registry
        self.bitrate = bitrate
        self.idle_end_s = idle_end_s
        self._here: dict[str, _NodeTalk] = {}
        self._tasks = TaskOwner("talks")
        self._waiting: dict[str, asyncio.Future[Outcome]] = {}
        self._unsubscribe: Callable[[], None] = lambda: None

    @property
    def node_id(self) -> str:
        return self._fleet.node_id

    def start(self) -> None:
        self._unsubscribe = self._fleet.bus.subscribe(self._received)

    async def close(self) -> None:
        self._unsubscribe()
        for talk_id in list(self._here):
            self.finish(talk_id)
        await self._tasks.close()

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.spawn(work, name)

    async def bus_publish(self, message: BusMessage, node: str) -> None:
        await self._fleet.bus.publish(message, node)

    @property
    def live(self) -> int:
        """Talks this node plays right now (tests, logs)."""
        return len(self._here)

    async def open(self, tenant: str, devices: list[str], priority: int, resume: bool) -> Talk:
        """Start a talk on ``devices`` (ids of ``tenant``): what happened to each, and the handle."""
        plan = TalkPlan(uuid.uuid4().hex, tenant, priority, resume)
        by_node, offline = await self._fleet.by_holder(tenant, devices)
        outcome = Outcome(offline=offline)
        start_unix = time.time()
        loop = asyncio.get_running_loop()
        answers: dict[str, asyncio.Future[Outcome]] = {}
        try:
            for node, targets in by_node.items():
                if node == self.node_id:
                    continue
                request = uuid.uuid4().hex
                self._waiting[request] = answers[node] = loop.create_future()
                data = {"plan": plan.to_data(), "devices": targets, "request": request}
                async with shared_io():
                    await self._fleet.bus.publish(
                        BusMessage(TALK, self.node_id, device=plan.id, data=data), node
                    )
            local = Outcome()
            if self.node_id in by_node:
                local = await self.perform(plan, by_node[self.node_id], self.node_id)
                outcome.add(local)
            if answers:
                await asyncio.wait(answers.values(), timeout=ANSWER_S)
        finally:
            for request in [r for r, f in self._waiting.items() if f in answers.values()]:
                del self._waiting[request]
        nodes = []
        for node, answer in answers.items():
            if answer.done() and not answer.cancelled() and answer.exception() is None:
                outcome.add(answer.result())
                if answer.result().started:
                    nodes.append(node)
            else:
                log.warning("talk.no_answer", extra={"talk": plan.id, "node": node})
                outcome.offline += by_node[node]
        talk = Talk(plan, len(devices), outcome.sorted(), start_unix, self, nodes, bool(local.started))
        log.info(
            "talk.open",
            extra={
                "talk": plan.id,
                "tenant": tenant,
                "started": len(talk.outcome.started),
                "busy": len(talk.outcome.busy),
                "offline": len(talk.outcome.offline),
                "refused": len(talk.outcome.refused),
            },
        )
        return talk

    # --- this node's part ------------------------------------------------------------------------

    async def perform(self, plan: TalkPlan, devices: list[str], origin: str) -> Outcome:
        """Start ``devices`` (live here) on a new feed for ``plan``; what happened to each."""
        feed = LiveFeed(f"talk {plan.id[:12]}")
        loop = asyncio.get_running_loop()
        here = _NodeTalk(plan, feed, loop.time(), origin)
        self._here[plan.id] = here
        cue = Cue(plan.id, feed, loop.time(), plan.priority, plan.resume)
        outcome = Outcome()
        later: list[Callable[[], None]] = []
        for device in devices:
            result = await self._registry.announce(Identity(plan.tenant, device), cue, later)
            kinds = {STARTED: outcome.started, OFFLINE: outcome.offline, BUSY: outcome.busy}
            kinds.get(result, outcome.refused).append(device)
        for news in later:
            news()
        if outcome.started:
            self._tasks.spawn(self._watch(here), f"talk-{plan.id[:12]}")
        else:
            del self._here[plan.id]
        log.info(
            "talk.performed",
            extra={
                "talk": plan.id,
                "tenant": plan.tenant,
                "started": len(outcome.started),
                "busy": len(outcome.busy),
                "offline": len(outcome.offline),
                "refused": len(outcome.refused),
            },
        )
        return outcome

    def heard(self, talk_id: str, packets: list[bytes]) -> None:
        here = self._here.get(talk_id)
        if here is None:
            return
        here.heard_at = asyncio.get_running_loop().time()
        for packet in packets:
            here.feed.append(packet)

    def finish(self, talk_id: str, reason: str = "ended") -> None:
        here = self._here.pop(talk_id, None)
        if here is None:
            return
        here.feed.end()
        log.info(
            "talk.finished",
            extra={"talk": talk_id, "reason": reason, "seconds": round(here.feed.duration, 2)},
        )

    async def _watch(self, here: _NodeTalk) -> None:
        """End the talk here once it has heard nothing for ``idle_end_s`` (or once it ended)."""
        loop = asyncio.get_running_loop()
        while self._here.get(here.plan.id) is here:
            wait = here.heard_at + self.idle_end_s - loop.time()
            if wait <= 0:
                self.finish(here.plan.id, "idle")
                return
            await asyncio.sleep(min(wait, self.idle_end_s / 4))

    # --- what other nodes tell us ----------------------------------------------------------------

    async def _received(self, message: BusMessage) -> None:
        if message.origin == self.node_id:
            return
        if message.kind == TALK_AUDIO:
            packets = [base64.b64decode(str(p)) for p in message.data.get("packets", [])]
            self.heard(str(message.data.get("talk")), packets)
        elif message.kind == TALK_END:
            self.finish(str(message.data.get("talk")))
        elif message.kind == TALK:  # in the handler, not a task: the talk's packets follow in order
            plan = TalkPlan.from_data(dict(message.data["plan"]))
            outcome = await self.perform(plan, [str(d) for d in message.data["devices"]], message.origin)
            reply = BusMessage(
                TALKED,
                self.node_id,
                device=plan.id,
                data={"request": message.data.get("request"), "outcome": outcome.to_data()},
            )
            await self._fleet.bus.publish(reply, message.origin)
        elif message.kind == TALKED:
            answer = self._waiting.pop(str(message.data.get("request")), None)
            if answer is not None and not answer.done():
                answer.set_result(Outcome.from_data(dict(message.data.get("outcome", {}))))
