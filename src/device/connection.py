"""Keep the device connected: connect, create a session, stream, and on any failure back off.

One loop, owned by the app: CONNECTING -> CONNECTED -> (failure) -> BACKOFF ->
CONNECTING ... A revoked certificate is reported clearly and retried only
slowly (it will not fix itself); a superseded session is reported and retried
with the normal backoff, except when the server says another device seems to
use this certificate (a clone): then this device stops taking the session over
and waits ``clone_retry_s`` (an hour by default) for an operator to sort it
out, so the one that holds the session keeps playing. A refusal because the server's state store is away
(UNAVAILABLE "state store unavailable") is a server that works and will take
the device as soon as its store is back: it is retried on a short backoff of
its own (full jitter, capped at ``STORE_RETRY_CAP_S``), not the long one, so the
device is back within seconds of the store; still jittered and capped, so a
fleet waiting on one server does not hammer it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc

from device.backoff import Backoff
from device.client import DeviceClient, StreamEnd
from device.diagnose import explain

log = logging.getLogger(__name__)

DEFAULT_REVOKED_RETRY_S = 300.0
DEFAULT_CLONE_RETRY_S = 3600.0
STORE_RETRY_BASE_S = 0.25
STORE_RETRY_CAP_S = 2.0
OLD_AUDIO_DRAIN_S = 1.0  # a hand-over waits this long at most for the old audio stream to drain
STORE_REFUSAL_TEXT = "state store unavailable"  # the server's words (server.errors.STORE_UNAVAILABLE_TEXT)


class LinkState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    REVOKED = "revoked"
    CLONE = "clone"  # told another device uses this certificate: waiting for an operator


@dataclass
class Attempt:
    started: float
    connected_for_s: float
    reason: str
    delay_s: float


@dataclass
class ConnectionManager:
    make_client: Callable[[], DeviceClient]
    backoff: Backoff
    on_state: Callable[[LinkState, DeviceClient | None], None]
    revoked_retry_s: float = DEFAULT_REVOKED_RETRY_S
    clone_retry_s: float = DEFAULT_CLONE_RETRY_S
    store_backoff: Backoff = field(
        default_factory=lambda: Backoff(base_s=STORE_RETRY_BASE_S, cap_s=STORE_RETRY_CAP_S)
    )
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    attempts: list[Attempt] = field(default_factory=list)
    client: DeviceClient | None = None
    last_cause: str | None = None  # the explained cause of the last failed attempt (printed once per change)
    _handover: asyncio.Future[None] | None = None  # set while ``hand_over`` runs

    async def _until_closed(self, client: DeviceClient) -> DeviceClient:
        """Wait until the live connection ends, following hand-overs (``hand_over``); returns the
        connection that ended."""
        while True:
            await client.closed.wait()
            if self._handover is not None:  # the old connection's audio moved over: wait for the outcome
                await asyncio.wait({self._handover})
            successor = self.client
            if successor is None or successor is client:
                return client
            await client.close()  # handed over: the new connection carries the session now
            client = successor

    async def hand_over(self, successor: DeviceClient, timeout_s: float) -> None:
        """Move the live session to ``successor`` (a client resuming it, e.g. with a renewed
        certificate) while the current connection keeps playing; the current one is closed once
        the successor's streams are up. Raises (and closes the successor) if they do not come up."""
        current = self.client
        if current is None:
            raise ConnectionError("not connected")
        self._handover = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout_s):
                await successor.connect()
                await _first(successor.ready.wait(), successor.closed.wait())
            if not successor.ready.is_set():
                end = next(iter(successor.ends.values()), None)
                raise ConnectionError(f"the new connection ended: {end.code.name if end else 'closed'}")
            if self.client is not current:  # the link went meanwhile: the loop reconnects anyway
                raise ConnectionError("the connection ended during the hand-over")
            # The server ends the old audio stream once the new one took over, after what it had
            # queued: closing before that would drop those packets.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(OLD_AUDIO_DRAIN_S):
                    await current.audio_ended.wait()
        except BaseException:
            await successor.close()
            raise
        else:
            self.client = successor
            self.on_state(LinkState.CONNECTED, successor)
            current.closed.set()  # the loop closes it and follows the successor
        finally:
            self._handover.set_result(None)
            self._handover = None

    async def run(self) -> None:
        """Until cancelled (power off): the owner cancels and awaits this."""
        while True:
            started = self.clock()
            connected_at: float | None = None
            client = self.make_client()
            self.on_state(LinkState.CONNECTING, None)
            reason = StreamEnd(grpc.StatusCode.UNKNOWN, "")
            try:
                await client.connect()
                connected_at = self.clock()
                self.client = client
                self.on_state(LinkState.CONNECTED, client)
                client = await self._until_closed(client)
                reason = next(iter(client.ends.values()), reason)
            except grpc.aio.AioRpcError as exc:
                reason = StreamEnd(exc.code(), exc.details() or "")
            finally:
                self.client = None
                await client.close()
            connected_for = self.clock() - connected_at if connected_at is not None else 0.0
            revoked = reason.code == grpc.StatusCode.PERMISSION_DENIED and "revoked" in reason.details
            superseded = reason.code == grpc.StatusCode.ABORTED and "superseded" in reason.details
            if superseded:
                connected_for = 0.0  # not a stable connection: backoff grows, as for any failure
            clone = superseded and "clone" in reason.details
            if clone:  # taking the session back would cut the other device's sound, again and again
                self.backoff.next_delay(connected_for)  # still a failure: the backoff keeps count
                delay = self.clone_retry_s
                log.error(
                    "device.possible_clone",
                    extra={
                        "detail": reason.details[:200],
                        "meaning": "another device seems to use this device's certificate",
                        "retry_in_s": delay,
                    },
                )
                self.on_state(LinkState.CLONE, None)
            elif revoked:
                delay = self.revoked_retry_s
                log.error("device.revoked", extra={"detail": reason.details, "retry_in_s": delay})
                self.on_state(LinkState.REVOKED, None)
            else:
                store_refused = (
                    reason.code == grpc.StatusCode.UNAVAILABLE and STORE_REFUSAL_TEXT in reason.details
                )
                if store_refused:  # the server works, its store will be back: ask again soon (bounded)
                    delay = self.store_backoff.next_delay()
                else:
                    self.store_backoff.failures = 0
                    delay = self.backoff.next_delay(connected_for)
                event = (
                    "device.superseded" if reason.code == grpc.StatusCode.ABORTED else "device.disconnected"
                )
                cause = explain(reason.code, reason.details) if connected_at is None else None
                log.warning(
                    event,
                    extra={
                        "code": reason.code.name,
                        "cause": cause or "",
                        "detail": reason.details[-300:],  # the end says why; the start is boilerplate
                        "connected_for_s": round(connected_for, 1),
                        "retry_in_s": round(delay, 2),
                    },
                )
                if cause and cause != self.last_cause:
                    print(f"audio-device: cannot connect to {client.target}: {cause}", file=sys.stderr)
                self.last_cause = cause
                self.on_state(LinkState.BACKOFF, None)
            self.attempts.append(Attempt(started, connected_for, reason.code.name, delay))
            await self.sleep(delay)


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    """Until the first of ``waits`` is done; the others are cancelled."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
