"""This node's place in the fleet: presence, the bus, and commands for devices wherever they are.

``Fleet`` listens to the registry (sessions opened, closed, claimed; devices
changed) and tells the other nodes through the bus, keeps the presence leases
of the devices live here, and acts on what other nodes say:

* a session claimed here whose device is held by another node -> that node
  ends the old session (``ABORTED`` "superseded") within a second;
* certificates revoked (seen by whichever node reloaded the CRL first) ->
  every node refuses and ends them;
* a command for a device -> applied by the node that holds it, through the
  same state machine as the device's own buttons; that node answers (``reply``)
  so the operator learns whether it landed;
* a device revoked by an operator -> every node ends its streams;
* device changes -> the device's whole view, delivered to watchers on every
  node (``watch``).

Bus and presence I/O runs on one outbox task, in order, so a device's
"connected" can never overtake its "disconnected"; a failing Redis delays it,
never the device streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from redis.exceptions import RedisError

from auth.identity import Identity
from comms.log_sampling import SampledLog
from server.devices.commands import REVOKE, Command
from server.devices.controller import DeviceController
from server.devices.registry import DeviceRegistry, RegistryListener
from server.errors import StoreUnavailable, describe
from server.fleet.bus import CHANGED, COMMAND, REPLY, REVOKED, SUPERSEDED, BusMessage, FleetBus
from server.fleet.device_view import DeviceView
from server.fleet.presence import Presence, keep_leases
from server.state.guard import StoreGuard
from server.state.shared_data import SharedData
from server.state.store import DeviceRecord
from server.supervision import HealthCallback, TaskOwner

log = logging.getLogger(__name__)

CLOSE_FLUSH_S = 1.0
HISTORY_KEEP = 50  # recent events kept per device
HISTORY_MAX_AGE_S = 7 * 86_400.0
COMMAND_TIMEOUT_S = 2.0  # a holder that does not answer a command by then is treated as gone
OUTBOX_LIMIT = 10_000  # bus/presence work waiting while Redis is slow; beyond it the oldest is dropped
Work = Callable[[], Awaitable[object]]
_io_failures = SampledLog()  # a Redis outage fails every queued message: a few lines, not thousands


@contextlib.asynccontextmanager
async def shared_io() -> AsyncIterator[None]:
    """Presence and the bus live in Redis: their failure is the shared store's (UNAVAILABLE)."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"shared store unavailable ({type(exc).__name__})") from None


def history_log(identity: Identity) -> str:
    return f"events:{identity.tenant}:{identity.device_id}"


class Revocations(Protocol):
    """What the fleet needs of the trust material (``TrustState`` is one): to hear of certificates
    revoked here, and to refuse those another node saw revoked. Injected, so the fleet does not
    depend on how trust is loaded."""

    def on_revoked(self, callback: Callable[[frozenset[int]], object]) -> None: ...

    def deny(self, serials: frozenset[int]) -> None: ...


class DeviceOffline(LookupError):
    """No node holds a live session of the device."""


class Fleet(RegistryListener):
    def __init__(
        self,
        registry: DeviceRegistry,
        records: StoreGuard,
        bus: FleetBus,
        presence: Presence,
        trust: Revocations,
        history: SharedData | None = None,
    ) -> None:
        self.history = history  # each device's recent events (connects, presses, modes, sounds)
        self.registry = registry
        self._records = records  # the device records operators read and change
        self.bus = bus
        self.presence = presence
        self.trust = trust
        self.node_id = bus.node_id
        self._outbox: asyncio.Queue[Work] = asyncio.Queue()
        self._tasks = TaskOwner("fleet")
        self._requests: dict[str, asyncio.Future[bool]] = {}  # commands sent to other nodes, by id
        registry.listener = self

    async def start(self, on_failing: HealthCallback | None = None) -> None:
        self.bus.subscribe(self._received)
        self.bus.on_restored(self.resync)
        self.trust.on_revoked(self.revoked_here)
        await self.bus.start(on_failing)
        self._tasks.supervise("fleet-outbox", self._drain, on_failing)
        self._tasks.supervise("presence-leases", lambda: keep_leases(self.presence, self._live), on_failing)
        # (A Redis outage is not a crash of these loops: they ride it out; the store's health reports it.)

    async def close(self) -> None:
        """Let queued presence and bus messages out (bounded: leases expire anyway), then stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_FLUSH_S):
                await self.idle()
        await self._tasks.close()
        await self.bus.close()

    def _live(self) -> list[Identity]:
        return [session.identity for session in self.registry.live_sessions()]

    # --- the outbox: bus and presence I/O, in order ---------------------------

    def _later(self, work: Work) -> None:
        if self._outbox.qsize() >= OUTBOX_LIMIT:
            self._outbox.get_nowait()
            self._outbox.task_done()
            log.warning("fleet.outbox_full", extra={"dropped": 1})
        self._outbox.put_nowait(work)

    async def _drain(self) -> None:
        while True:
            work = await self._outbox.get()
            try:
                await work()
            except Exception as exc:  # Redis down or slow: the store's health says so; go on
                held_back = _io_failures.admit(type(exc).__name__)
                if held_back is not None:
                    log.warning(
                        "fleet.io_failed",
                        extra={"error": describe(exc), "suppressed": held_back},
                    )
            finally:
                self._outbox.task_done()

    async def idle(self) -> None:
        """Wait until everything queued so far went out (tests and shutdown)."""
        await self._outbox.join()

    def _publish(self, message: BusMessage, node: str | None = None) -> None:
        self._later(lambda: self.bus.publish(message, node))

    def _message(self, kind: str, identity: Identity, **data: object) -> BusMessage:
        return BusMessage(kind, self.node_id, identity.tenant, identity.device_id, dict(data))

    # --- what the registry tells us -------------------------------------------

    def view_of(self, controller: DeviceController) -> DeviceView:
        session = controller.session
        return DeviceView(controller.record, session is not None and not session.closed, self.node_id)

    def session_opened(self, controller: DeviceController) -> None:
        identity = controller.identity
        self._later(lambda: self.presence.claim(identity))
        self.publish_view(self.view_of(controller), "connected")
        self.device_event(controller, "connected")

    def session_closed(self, controller: DeviceController) -> None:
        identity = controller.identity
        self._later(lambda: self.presence.release(identity))
        self.publish_view(DeviceView(controller.record, online=False), "disconnected")
        self.device_event(controller, f"disconnected ({controller.record.disconnect_reason or 'ended'})")

    def device_event(self, controller: DeviceController, what: str) -> None:
        """Remember ``what`` happened to the device (its recent events, for operators)."""
        history = self.history
        if history is None:
            return
        entry = json.dumps({"time": time.time(), "what": what, "node": self.node_id})
        log_name = history_log(controller.identity)
        self._later(lambda: history.append(log_name, entry, HISTORY_KEEP, HISTORY_MAX_AGE_S))

    async def by_holder(self, tenant: str, devices: list[str]) -> tuple[dict[str, list[str]], list[str]]:
        """Where ``devices`` (ids of ``tenant``) are live: their ids by the node holding each, and
        the ids no node holds (offline). One presence read for all of them."""
        async with shared_io():
            holders = await self.presence.holders([Identity(tenant, d) for d in devices])
        by_node: dict[str, list[str]] = {}
        offline: list[str] = []
        for device, holder in zip(devices, holders, strict=True):
            if holder is None:
                offline.append(device)
            else:
                by_node.setdefault(holder, []).append(device)
        return by_node, offline

    def session_claimed(self, identity: Identity, session_id: str) -> None:
        async def tell_the_holder() -> None:
            holder = await self.presence.holder(identity)
            if holder is not None and holder != self.node_id:
                await self.bus.publish(self._message(SUPERSEDED, identity, session=session_id), holder)

        self._later(tell_the_holder)

    def device_changed(self, controller: DeviceController, change: str) -> None:
        self.publish_view(self.view_of(controller), change)
        record = controller.record
        if change == "mode":
            self.device_event(controller, f"mode {record.mode}")
        elif change == "playing":
            self.device_event(
                controller, f"playing mode {record.playing[0]}" if record.playing else "sound ended"
            )

    def resync(self) -> None:
        """The bus was down: messages published meanwhile are lost, and presence leases may have
        expired. Renew every live device's lease at once (else operators see it offline until the
        next refresh), say again how every live device looks, so every watcher in the fleet catches
        up, and end any live session an operator revoked or another node superseded meanwhile
        (their broadcasts may be among the lost)."""
        self._later(self._renew_leases)
        for session in self.registry.live_sessions():
            controller = self.registry.controller(session.identity)
            if controller is not None:
                self.publish_view(self.view_of(controller), "resync")
        self._later(self._reconcile)

    async def _renew_leases(self) -> None:
        try:
            await self.presence.refresh(self._live())
        except (RedisError, OSError):  # a pooled connection from before the outage fails its first use
            await self.presence.refresh(self._live())

    async def _reconcile(self) -> None:
        """End live sessions the store says are revoked or no longer the device's."""
        for session in self.registry.live_sessions():
            record = await self.registry.current_record(session.identity)
            if record is None:  # the store lost the record (a reset): its owner writes it back
                continue
            if record.revoked:
                await self.registry.apply(session.identity, Command(REVOKE))
            elif record.session_id is not None and record.session_id != session.id:
                await self.registry.superseded_elsewhere(session.identity, record.session_id)

    def publish_view(self, view: DeviceView, change: str) -> None:
        """Tell every watcher in the fleet (this node's too) how the device looks now."""
        self._publish(self._message(CHANGED, view.identity, view=view.to_data(), change=change))

    def revoked_here(self, serials: frozenset[int]) -> None:
        """This node's CRL reload revoked ``serials``: every other node must know within a second."""
        message = BusMessage(REVOKED, self.node_id, data={"serials": [str(s) for s in sorted(serials)]})
        self._publish(message)

    # --- what operators see and do --------------------------------------------

    async def device(self, identity: Identity) -> DeviceView | None:
        """One device as operators see it, or None if it has no record."""
        record = await self._records.load(identity)
        if record is None:
            return None
        (view,) = await self.views([record])
        return view

    async def devices(
        self, tenant: str | None, keep: Callable[[DeviceRecord], bool] | None = None
    ) -> list[DeviceView]:
        """A tenant's devices (every tenant's for None), ``keep`` applied before presence is asked."""
        records = await self._records.list_devices(tenant)
        return await self.views([r for r in records if keep is None or keep(r)])

    async def change_record(
        self, identity: Identity, changes: dict[str, object], session_id: str | None = None
    ) -> bool:
        """An operator's change, in the store before returning (compare-and-set on ``session_id``)."""
        return await self._records.update_now(identity, changes, session_id)

    async def views(self, records: list[DeviceRecord]) -> list[DeviceView]:
        """Records from the store with where (whether) each device is live; this node's own
        live devices from memory (fresher than the store)."""
        async with shared_io():
            holders = await self.presence.holders([r.identity for r in records])
        views = []
        for record, holder in zip(records, holders, strict=True):
            controller = self.registry.controller(record.identity)
            if controller is not None and controller.session is not None and not controller.session.closed:
                views.append(self.view_of(controller))
            else:
                views.append(DeviceView(record, holder is not None, holder or ""))
        return views

    async def command(self, identity: Identity, command: Command) -> str:
        """Apply ``command`` to the device wherever it is connected; the node that applied it.

        ``DeviceOffline`` when no node holds it (or its holder says it no longer does),
        ``TimeoutError`` when the holder does not answer within ``COMMAND_TIMEOUT_S``.
        """
        if await self.registry.apply(identity, command):
            return self.node_id
        async with shared_io():
            holder = await self.presence.holder(identity)
        if holder is None or holder == self.node_id:
            raise DeviceOffline(f"{identity} is offline")
        request = uuid.uuid4().hex
        answer = asyncio.get_running_loop().create_future()
        self._requests[request] = answer
        try:
            message = self._message(COMMAND, identity, command=command.to_data(), request=request)
            async with shared_io():
                await self.bus.publish(message, holder)
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                applied = await answer
        finally:
            self._requests.pop(request, None)
        if not applied:
            raise DeviceOffline(f"{identity} is offline")
        return holder

    async def revoke(self, identity: Identity) -> None:
        """The device was put on the deny-list: every node ends its streams now."""
        await self.registry.apply(identity, Command(REVOKE))
        self._publish(self._message(REVOKED, identity))  # lost in a bus outage? the resync after it ends it

    def watch(self, handler: Callable[[DeviceView, str], Awaitable[None]]) -> Callable[[], None]:
        """Every device change in the fleet (connected, disconnected, mode, playing, telemetry,
        revoked, ...), as the device now looks; returns the unwatch."""

        async def changes_only(message: BusMessage) -> None:
            if message.kind == CHANGED and "view" in message.data:
                await handler(DeviceView.from_data(message.data["view"]), str(message.data.get("change", "")))

        return self.bus.subscribe(changes_only)

    # --- what other nodes tell us ---------------------------------------------

    async def _received(self, message: BusMessage) -> None:
        if message.kind == REPLY:
            answer = self._requests.get(str(message.data.get("request")))
            if answer is not None and not answer.done():
                answer.set_result(bool(message.data.get("applied")))
            return
        if message.origin == self.node_id and message.kind != CHANGED:
            return
        if message.kind == REVOKED and not message.tenant:
            serials = frozenset(int(s) for s in message.data.get("serials", []))
            self.trust.deny(serials)
            self.registry.revoke(serials)
            return
        if not message.tenant:
            return
        identity = Identity(message.tenant, message.device)
        if message.kind == SUPERSEDED:
            await self.registry.superseded_elsewhere(identity, str(message.data["session"]))
        elif message.kind == REVOKED:
            await self.registry.apply(identity, Command(REVOKE))
        elif message.kind == COMMAND:
            applied = await self.registry.apply(identity, Command.from_data(message.data["command"]))
            reply = BusMessage(
                REPLY, self.node_id, data={"request": message.data.get("request"), "applied": applied}
            )
            await self.bus.publish(reply, message.origin)
