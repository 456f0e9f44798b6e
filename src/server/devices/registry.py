"""Identity -> isolated device state, and the live session that drives its streams.

* ``DeviceSession`` (device_session.py): one connection of a device. Its three
  streams share it; a newer connection of the same identity supersedes it (its
  streams end with ABORTED).
* ``DeviceController`` (controller.py): one device's live state. Serialises
  events through the pure state machine and carries out the effects.
* ``DeviceRegistry`` (here): finds or loads the controller for an identity,
  attaches RPCs to sessions, and evicts a device when its last stream ends.

A session ends one way, ``DeviceRegistry.end_session``, whatever the reason
(superseded, shutdown, revoked, the device went away): the playing sound ends
with ``is_end``, the streams close with the reason's status, and when the last
stream detaches the record is queued for the store and the device evicted. The
store is behind a ``StoreGuard``: its failures never block that path.

Identities come only from the interceptor; tenant A's record is keyed apart
from tenant B's even for equal device ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable

import grpc

from auth.errors import DeviceRevoked, SessionSuperseded
from auth.identity import Identity
from server import metrics
from server.audio.library import ClipSource
from server.audio.player import FrameClock
from server.devices.commands import DISCONNECT, MODE, PRESS, REVOKE, Command
from server.devices.controller import DeviceController
from server.devices.cue import OFFLINE, Cue
from server.devices.live_session import DeviceSession
from server.devices.state_machine import ConnectionLost, Press
from server.errors import DEVICE_REVOKED_TEXT, StoreUnavailable
from server.state.guard import StoreGuard
from server.state.store import DeviceRecord, Renewal
from server.supervision import HealthCallback, TaskOwner

log = logging.getLogger(__name__)

SUPERSEDED_MESSAGE = "session superseded by a newer session of this device"
CLONE_MESSAGE = (
    "session superseded again ({count} times in {window:.0f} s): another device seems to use this "
    "device's certificate (a clone?); back off and ask the operator"
)
CLONE_SUPERSEDES = 3  # supersedes within CLONE_WINDOW_S that look like two devices sharing one identity
CLONE_WINDOW_S = 60.0
CLONE_TRACKED = 10_000  # identities remembered for this (bounded memory)
STALLED_MESSAGE = "the device stopped reading audio; reconnect"
WATCHDOG_INTERVAL_S = 1.0
SHUTDOWN_MESSAGE = "server is shutting down; reconnect"
REVOKED_MESSAGE = "device certificate revoked"
ENDED_MESSAGE = "session ended"
OPERATOR_DISCONNECT_MESSAGE = "disconnected by an operator; reconnect"


class RegistryListener:
    """What the rest of the fleet hears from this registry (``server.fleet.node.Fleet``); no-ops here."""

    def session_opened(self, controller: DeviceController) -> None:
        return None

    def session_closed(self, controller: DeviceController) -> None:
        return None

    def session_claimed(self, identity: Identity, session_id: str) -> None:
        return None

    def device_changed(self, controller: DeviceController, change: str) -> None:
        return None

    def device_event(self, controller: DeviceController, what: str) -> None:
        return None


class _IdentityLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class DeviceRegistry:
    """Maps identities to controllers and RPCs to sessions."""

    def __init__(
        self,
        store: StoreGuard,
        sounds: ClipSource,
        mode_count: int,
        clock: FrameClock,
        event_limit: tuple[float, int] = (10.0, 20),
        write_timeout_s: float = 10.0,
        shared_store: bool = False,
    ) -> None:
        self._shared = shared_store  # other processes write the store too: never trust a cached session
        self._event_limit = event_limit
        self._write_timeout_s = write_timeout_s
        self._store = store
        self._sounds = sounds
        self._mode_count = mode_count
        self._clock = clock
        self._controllers: dict[Identity, DeviceController] = {}
        self._locks: dict[Identity, _IdentityLock] = {}
        self._empty = asyncio.Event()
        self._empty.set()
        self._tasks = TaskOwner("registry")  # the write watchdog and session endings it started
        self._supersedes: OrderedDict[Identity, deque[float]] = OrderedDict()
        self.listener = RegistryListener()  # replaced by the fleet (bus, presence) when there is one
        metrics.track_live(self)

    # --- what is live (read by the metrics collector at scrape time) ---------

    def live_sessions(self) -> list[DeviceSession]:
        return [
            c.session
            for c in list(self._controllers.values())
            if c.session is not None and not c.session.closed
        ]

    def connected_by_tenant(self) -> dict[str, int]:
        tenants: dict[str, int] = {}
        for session in self.live_sessions():
            tenants[session.identity.tenant] = tenants.get(session.identity.tenant, 0) + 1
        return tenants

    def streams_by_kind(self) -> dict[str, int]:
        kinds: dict[str, int] = {}
        for controller in list(self._controllers.values()):
            if controller.session is not None:
                for kind, count in list(controller.session.streams.items()):
                    kinds[kind] = kinds.get(kind, 0) + count
        return kinds

    def controller(self, identity: Identity) -> DeviceController | None:
        return self._controllers.get(identity)

    def __len__(self) -> int:
        return len(self._controllers)

    async def _controller(self, identity: Identity) -> DeviceController:
        """The live controller, loading the record on first use. Call with the identity's lock held."""
        controller = self._controllers.get(identity)
        if controller is None:
            record = await self._store.load(identity) or DeviceRecord(identity)  # may raise StoreUnavailable
            controller = DeviceController(
                record,
                self._sounds,
                self._store,
                self._mode_count,
                self._clock,
                self._event_limit,
                lambda changed, change: self.listener.device_changed(changed, change),
            )
            self._controllers[identity] = controller
            self._empty.clear()
        return controller

    async def current_record(self, identity: Identity) -> DeviceRecord | None:
        """The device's record (current session, revoked or not): with a shared store always the
        store's word, since another replica may have claimed or an operator revoked it meanwhile."""
        controller = self._controllers.get(identity)
        if controller is not None and not self._shared:
            return controller.record
        return await self._store.load(identity)

    async def _adopt_from_store(self, controller: DeviceController, session_id: str) -> None:
        """Another replica claimed the device for ``session_id`` (the token says so and the store
        agrees): end what this replica still holds of the device and take the store's state."""
        fresh = await self._store.load(controller.identity)
        if fresh is None or fresh.session_id != session_id:
            return
        old = controller.session
        if old is not None:
            await self._supersede(controller, old)
            controller.session = None
        controller.adopt(fresh)
        log.info(
            "session.adopted", extra={**controller.log_fields, "session": session_id, "epoch": fresh.epoch}
        )

    async def start_session(
        self,
        identity: Identity,
        session_id: str,
        cert_serial: int | None = None,
        cert_expires: float = 0.0,
        cert_issued: float = 0.0,
    ) -> None:
        """Make ``session_id`` the device's session; a live older session is superseded.

        The new session is durable before this returns (``StoreUnavailable`` otherwise),
        so no token is issued for a session the store does not know. A device on the
        operator deny-list gets none (``DeviceRevoked``).
        """
        facts: dict[str, object] = {"connected_since": time.time(), "cert_serial": cert_serial}
        if cert_expires:
            facts["cert_expires"] = cert_expires
        if cert_issued:
            facts["cert_issued"] = cert_issued
        async with self._lock(identity):
            controller = self._controllers.get(identity)
            epoch = await self._store.claim_now(identity, session_id, facts)
            if epoch == 0:
                raise DeviceRevoked(DEVICE_REVOKED_TEXT)
            self.listener.session_claimed(identity, session_id)
            if controller is None:
                return
            controller.record = controller.record.with_changes(session_id=session_id, epoch=epoch, **facts)
            old = controller.session
            if old is not None and old.id != session_id and not old.closed:
                await self._supersede(controller, old)

    async def _supersede(self, controller: DeviceController, session: DeviceSession) -> bool:
        """End ``session`` because a newer one of its device exists (here or on another node)."""
        return await self._end(
            controller, session, grpc.StatusCode.ABORTED, self._superseded_message(session), "superseded"
        )

    def _superseded_message(self, session: DeviceSession) -> str:
        """The ABORTED text; after a few supersedes in a short time it says plainly: a clone?"""
        now = asyncio.get_running_loop().time()
        times = self._supersedes.pop(session.identity, deque())
        times.append(now)
        while times and now - times[0] > CLONE_WINDOW_S:
            times.popleft()
        self._supersedes[session.identity] = times
        while len(self._supersedes) > CLONE_TRACKED:
            self._supersedes.popitem(last=False)
        if len(times) < CLONE_SUPERSEDES:
            return SUPERSEDED_MESSAGE
        metrics.POSSIBLE_CLONES.inc()
        log.warning(
            "session.possible_clone",
            extra={
                **session.log_fields,
                "supersedes": len(times),
                "window_s": CLONE_WINDOW_S,
                "meaning": "two devices seem to share this certificate",
            },
        )
        return CLONE_MESSAGE.format(count=len(times), window=CLONE_WINDOW_S)

    @contextlib.asynccontextmanager
    async def _lock(self, identity: Identity) -> AsyncIterator[None]:
        """Serialise changes per identity; the lock is forgotten when nobody holds or awaits it."""
        entry = self._locks.setdefault(identity, _IdentityLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[identity]

    def locks_held(self) -> int:
        return len(self._locks)

    async def open_rpc(
        self,
        identity: Identity,
        session_id: str,
        cert_serial: int,
        kind: str,
        issuer_serial: int | None = None,
    ) -> tuple[DeviceController, DeviceSession]:
        """Attach one RPC to the streams of its session. Raises SessionSuperseded for an old session."""
        async with self._lock(identity):
            controller = await self._controller(identity)
            if controller.record.session_id != session_id and self._shared:
                await self._adopt_from_store(controller, session_id)
            if controller.record.session_id != session_id:
                if controller.session is None:
                    self._evict(controller)
                raise SessionSuperseded("session was superseded by a newer one: create a new session")
            session = controller.session
            if session is None or session.closed or session.id != session_id:
                session = DeviceSession(identity, session_id, cert_serial, issuer_serial)
                controller.session = session
                metrics.SESSIONS_OPENED.inc()
                log.info("session.open", extra={**session.log_fields, "mode": controller.state.mode})
                self.listener.session_opened(controller)
            elif session.cert_serial != cert_serial:  # streams moved to a renewed certificate
                session.cert_serial, session.issuer_serial = cert_serial, issuer_serial
            session.active_rpcs += 1
            session.streams[kind] = session.streams.get(kind, 0) + 1
            return controller, session

    def _evict(self, controller: DeviceController) -> None:
        if self._controllers.get(controller.identity) is controller:
            del self._controllers[controller.identity]
        if not self._controllers:
            self._empty.set()

    async def _end(
        self,
        controller: DeviceController,
        session: DeviceSession,
        code: grpc.StatusCode,
        message: str,
        why: str,
    ) -> bool:
        """The one way a session ends. Call with the identity's lock held; False if it had ended already.

        The sound ends with ``is_end`` (queued before the streams close, so it goes out
        first), then every stream of the session ends with ``code``. Persisting and
        eviction follow when the last stream detaches (``close_rpc``).
        """
        if session.closed:
            return False
        try:
            if controller.session is session:
                await controller.handle(ConnectionLost())  # the sound fades out, LEDs say so
        except Exception:  # a failing fade-out must never leave a session that cannot end
            log.exception("session.fade_out_failed", extra={**session.log_fields, "reason": why})
        finally:
            session.close(code, message)
        metrics.SESSIONS_ENDED.labels(reason=why).inc()
        if why == "superseded":
            metrics.SESSIONS_SUPERSEDED.inc()
        level = logging.WARNING if why == "revoked" else logging.INFO
        log.log(level, "session.ending", extra={**session.log_fields, "reason": why, "code": code.name})
        return True

    async def end_session(
        self,
        identity: Identity,
        code: grpc.StatusCode,
        message: str,
        why: str,
        cert_serials: frozenset[int] | None = None,
    ) -> bool:
        """End the live session of ``identity`` (if given: only if ``cert_serials`` revoke it)."""
        async with self._lock(identity):
            controller = self._controllers.get(identity)
            session = controller.session if controller is not None else None
            if controller is None or session is None:
                return False
            if cert_serials is not None and not session.revoked_by(cert_serials):
                return False
            return await self._end(controller, session, code, message, why)

    async def renewed(self, identity: Identity, renewal: Renewal) -> None:
        """The device renewed its certificate: on record before it gets the certificate
        (``StoreUnavailable`` otherwise); a live controller's memory follows, so its later
        writes and operators' views carry the new serial and expiry."""
        async with self._lock(identity):
            await self._store.renewal_now(identity, renewal)
            controller = self._controllers.get(identity)
            if controller is not None:
                controller.record = controller.record.with_changes(**renewal.fields())
                self.listener.device_changed(controller, "renewed")

    async def renewal_failed(self, identity: Identity, reason: str) -> None:
        """A refused renewal, for operators; never raises (a store outage loses only this note)."""
        now = time.time()
        with contextlib.suppress(StoreUnavailable):
            await self._store.renewal_failed_now(identity, reason, now)
        controller = self._controllers.get(identity)
        if controller is not None:
            controller.record = controller.record.with_changes(renewal_failed_at=now, renewal_failure=reason)
            self.listener.device_changed(controller, "renewal_failed")

    async def superseded_elsewhere(self, identity: Identity, session_id: str) -> bool:
        """Another node claimed the device for ``session_id``: end what this node holds of it."""
        async with self._lock(identity):
            controller = self._controllers.get(identity)
            session = controller.session if controller is not None else None
            if controller is None or session is None or session.id == session_id:
                return False
            return await self._supersede(controller, session)

    async def apply(self, identity: Identity, command: Command) -> bool:
        """An operator's command for a device live on this node; False if it is not live here."""
        controller = self._controllers.get(identity)
        if controller is None or controller.session is None or controller.session.closed:
            return False
        if command.op == PRESS:
            await controller.press(command.button, Press.PRESS)
        elif command.op == MODE:
            await controller.select_mode(command.mode)
        elif command.op == DISCONNECT:
            return await self.end_session(
                identity, grpc.StatusCode.UNAVAILABLE, OPERATOR_DISCONNECT_MESSAGE, "operator"
            )
        elif command.op == REVOKE:
            controller.record = controller.record.with_changes(revoked=True)
            return await self.end_session(
                identity, grpc.StatusCode.PERMISSION_DENIED, DEVICE_REVOKED_TEXT, "revoked"
            )
        return True

    async def announce(self, identity: Identity, cue: Cue, later: list[Callable[[], None]]) -> str:
        """Play ``cue`` on the device if it is live on this node: ``STARTED``, ``REFUSED`` (a
        higher or equal announcement plays) or ``OFFLINE`` (not live here). The news of it is
        appended to ``later`` (see ``DeviceController.handle``)."""
        controller = self._controllers.get(identity)
        if controller is None or controller.session is None or controller.session.closed:
            return OFFLINE
        outcome = await controller.announce(cue, later)
        what = f"{'talk' if cue.talk else 'announcement'} {cue.announcement[:12]}: {outcome}"
        later.append(lambda: self.listener.device_event(controller, what))
        return outcome

    def revoke(self, serials: frozenset[int]) -> None:
        """End at once the live sessions whose certificate (or its issuing CA) was just revoked
        (called by the CRL reload)."""
        for session in self.live_sessions():
            if session.revoked_by(serials):
                self._tasks.spawn(
                    self.end_session(
                        session.identity,
                        grpc.StatusCode.PERMISSION_DENIED,
                        REVOKED_MESSAGE,
                        "revoked",
                        serials,
                    )
                )

    async def close_rpc(self, controller: DeviceController, session: DeviceSession, kind: str) -> None:
        """Detach one RPC; the last one of the live session ends it, persists and evicts the device."""
        identity = controller.identity
        async with self._lock(identity):
            session.active_rpcs -= 1
            session.streams[kind] -= 1
            if session.active_rpcs > 0 or controller.session is not session:
                return
            await self._end(controller, session, grpc.StatusCode.CANCELLED, ENDED_MESSAGE, "disconnected")
            controller.session = None
            await controller.player.close()
            controller.disconnected(session.close_code.name)  # queued: a failing store never blocks this
            self._evict(controller)
            self.listener.session_closed(controller)
            log.info("session.end", extra={**session.log_fields, "status": session.close_code.name})

    async def close_all(self, code: grpc.StatusCode, message: str) -> int:
        """End every live session (shutdown): sounds end with is_end, then streams close with ``code``."""
        ended = 0
        for session in self.live_sessions():
            ended += await self.end_session(session.identity, code, message, "shutdown")
        return ended

    def start(self, on_failing: HealthCallback | None = None) -> None:
        self._tasks.supervise("write-watchdog", self._watch_writes, on_failing)

    async def _watch_writes(self) -> None:
        """One sweep a second instead of a timer per packet: end sessions whose audio write is stuck.

        A write counts as stuck from the first sweep that sees it pending: the stream only counts
        (no clock read per packet), so a stuck write ends the session within the timeout plus
        up to two sweeps."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            now = loop.time()
            for session in self.live_sessions():
                if not session.audio_write_pending:
                    session.write_watch = None
                    continue
                write = session.audio_writes_begun
                if session.write_watch is None or session.write_watch[0] != write:
                    session.write_watch = (write, now)  # a new write in flight: its clock starts
                    continue
                since = session.write_watch[1]
                if now - since > self._write_timeout_s:
                    log.warning(
                        "audio.stalled", extra={**session.log_fields, "stuck_s": round(now - since, 1)}
                    )
                    session.write_watch = (write, math.inf)  # ended once (the stream keeps its counts)
                    self._tasks.spawn(
                        self.end_session(
                            session.identity, grpc.StatusCode.UNAVAILABLE, STALLED_MESSAGE, "stalled"
                        )
                    )

    async def close(self) -> None:
        """Stop the watchdog; await the session endings still in flight (owner's shutdown)."""
        await self._tasks.close()

    async def wait_empty(self, timeout: float) -> bool:
        """Wait until every session detached; False on timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._empty.wait()
        return not self._controllers
