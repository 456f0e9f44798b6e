"""The node that took an announcement: where its targets are, the plan to each node, the outcomes.

``announce`` looks up which node holds each targeted device (presence; a
device no node holds is offline), picks the start instant ``lead_s`` ahead
(long enough for every node to hear of it through the bus and load the sound),
sends each node its devices (``ANNOUNCE`` on that node's bus channel; this
node's own go straight to its stage) and waits until every node has answered
(``ANNOUNCED``) or ``ANSWER_S`` after the instant. A node that does not answer
in time is reported as such: its devices count as offline.

Only devices live at the time of the call are targeted; a device that connects
later never plays a stale announcement, and one that connected on a node
between the call and the instant is not in that node's list.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from server.announce.plan import Announcement, Outcome
from server.announce.stage import Stage
from server.audio.tenant_sounds import SoundChoice
from server.fleet.bus import BusMessage
from server.fleet.node import Fleet, shared_io
from server.supervision import TaskOwner

log = logging.getLogger(__name__)

ANNOUNCE, ANNOUNCED = "announce", "announced"  # bus kinds (tenant-less: the fleet's handler ignores them)
ANSWER_S = 2.0  # how long after the instant the caller waits for the nodes' outcomes


class Announcer:
    def __init__(self, fleet: Fleet, stage: Stage, lead_s: float) -> None:
        self._fleet = fleet
        self._stage = stage
        self.lead_s = lead_s
        self._tasks = TaskOwner("announce")  # other nodes' announcements performed here
        self._waiting: dict[str, asyncio.Future[Outcome]] = {}  # our requests to other nodes
        self._unsubscribe = lambda: None

    def start(self) -> None:
        self._unsubscribe = self._fleet.bus.subscribe(self._received)

    async def close(self) -> None:
        self._unsubscribe()
        await self._tasks.close()

    async def announce(
        self, tenant: str, devices: list[str], sound: SoundChoice, priority: int, resume: bool
    ) -> tuple[Announcement, Outcome]:
        """Play ``sound`` on ``devices`` (ids of ``tenant``) at one instant; what happened to each."""
        by_node, offline = await self._fleet.by_holder(tenant, devices)
        outcome = Outcome(offline=offline)
        announcement = Announcement(
            uuid.uuid4().hex, tenant, sound, time.time() + self.lead_s, priority, resume
        )
        loop = asyncio.get_running_loop()
        answers: dict[str, asyncio.Future[Outcome]] = {}
        async with TaskOwner("announce-call") as tasks:
            try:
                for node, targets in by_node.items():
                    answers[node] = answer = loop.create_future()
                    if node == self._fleet.node_id:
                        tasks.spawn(self._local(announcement, targets, answer), "local")
                    else:
                        await self._send(announcement, node, targets, answer)
                if answers:
                    wait = announcement.start_at - time.time() + ANSWER_S
                    await asyncio.wait(answers.values(), timeout=max(0.0, wait))
            finally:
                for request in [r for r, f in self._waiting.items() if f in answers.values()]:
                    del self._waiting[request]
        for node, answer in answers.items():
            if answer.done() and not answer.cancelled() and answer.exception() is None:
                outcome.add(answer.result())
            else:
                log.warning("announce.no_answer", extra={"announcement": announcement.id, "node": node})
                outcome.offline += by_node[node]
        return announcement, outcome.sorted()

    async def _local(
        self, announcement: Announcement, devices: list[str], answer: asyncio.Future[Outcome]
    ) -> None:
        try:
            answer.set_result(await self._stage.perform(announcement, devices))
        except Exception as exc:
            answer.set_exception(exc)
            raise

    async def _send(
        self, announcement: Announcement, node: str, devices: list[str], answer: asyncio.Future[Outcome]
    ) -> None:
        request = uuid.uuid4().hex
        self._waiting[request] = answer
        data = {"announcement": announcement.to_data(), "devices": devices, "request": request}
        async with shared_io():
            await self._fleet.bus.publish(BusMessage(ANNOUNCE, self._fleet.node_id, data=data), node)

    # --- what other nodes tell us --------------------------------------------------------------

    async def _received(self, message: BusMessage) -> None:
        if message.kind == ANNOUNCED:
            answer = self._waiting.pop(str(message.data.get("request")), None)
            if answer is not None and not answer.done():
                answer.set_result(Outcome.from_data(dict(message.data.get("outcome", {}))))
        elif message.kind == ANNOUNCE and message.origin != self._fleet.node_id:
            self._tasks.spawn(self._perform(message), "perform")  # off the bus: it waits for the instant

    async def _perform(self, message: BusMessage) -> None:
        announcement = Announcement.from_data(dict(message.data["announcement"]))
        devices = [str(d) for d in message.data["devices"]]
        outcome = await self._stage.perform(announcement, devices)
        reply = BusMessage(
            ANNOUNCED,
            self._fleet.node_id,
            data={"request": message.data.get("request"), "outcome": outcome.to_data()},
        )
        await self._fleet.bus.publish(reply, message.origin)
