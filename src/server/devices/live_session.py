"""One connection of a device: the live streams of one session, and how they end together.

Its three streams share it; closing it (superseded, revoked, shutdown, the
device went away) wakes every stream so it can wind down with the session's
status. ``guard`` runs a stream's work until it ends or the session closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import grpc

from auth.identity import Identity


async def run_until_first(*aws: Coroutine[Any, Any, Any] | Awaitable[Any]) -> None:
    """Run awaitables until the first one finishes; cancel and await the rest; re-raise its error."""
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


class DeviceSession:
    """The live streams of one session (one CreateSession) of a device."""

    def __init__(
        self, identity: Identity, session_id: str, cert_serial: int, issuer_serial: int | None = None
    ) -> None:
        self.id = session_id
        self.identity = identity
        self.cert_serial = cert_serial
        self.issuer_serial = issuer_serial  # its issuing CA's: revoking that CA ends this session too
        self.active_rpcs = 0
        self.streams: dict[str, int] = {}  # open RPCs by kind (status/event/audio)
        self.unanswered_since: float | None = None  # loop time of the oldest unanswered status request
        self.answered = asyncio.Event()  # set whenever the device answers a status request
        # Audio writes begun and completed: two increments per packet; the registry's watchdog
        # samples them once a second (a write begun and never done is a device not reading).
        self.audio_writes_begun = 0
        self.audio_writes_done = 0
        # The watchdog's: (write, loop time first seen pending), the time inf once it ended the session.
        self.write_watch: tuple[int, float] | None = None
        self.leds_changed = asyncio.Event()
        self._closed = asyncio.Event()
        self.close_code = grpc.StatusCode.OK
        self.close_message = ""
        self._on_close: list[Callable[[], None]] = []

    def revoked_by(self, serials: frozenset[int]) -> bool:
        """Whether revoking ``serials`` revokes this session's certificate (or its issuing CA)."""
        return self.cert_serial in serials or self.issuer_serial in serials

    @property
    def log_fields(self) -> dict[str, str]:
        return {
            "tenant": self.identity.tenant,
            "device": self.identity.device_id,
            "session": self.id,
        }

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def audio_write_pending(self) -> bool:
        return self.audio_writes_begun != self.audio_writes_done

    def stalled(self, threshold_s: float) -> bool:
        """The link is stalled: a status request has gone unanswered for more than ``threshold_s``.

        Status requests and answers share the device's one connection with its events and
        audio, so an unanswered request means bytes are not getting through (a partition,
        a device that stopped reading), whatever TCP and gRPC have buffered meanwhile.
        """
        since = self.unanswered_since
        return since is not None and asyncio.get_running_loop().time() - since > threshold_s

    def on_close(self, callback: Callable[[], None]) -> None:
        self._on_close.append(callback)

    def close(self, code: grpc.StatusCode, message: str) -> None:
        if not self._closed.is_set():
            self.close_code, self.close_message = code, message
            self._closed.set()
            self.leds_changed.set()  # wakes the status writer so it can wind down
            for callback in self._on_close:
                callback()

    async def guard(self, work: Coroutine[Any, Any, Any], linger_s: float = 0.0) -> None:
        """Run a stream's work until it ends or the session closes.

        On close the work gets ``linger_s`` to finish by itself (the status
        stream lets the device answer what it was asked), then it is cancelled.
        """
        task = asyncio.ensure_future(work)
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({task, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done() and linger_s > 0:
                await asyncio.wait({task}, timeout=linger_s)
        finally:
            for pending in (task, closed):
                pending.cancel()
            await asyncio.gather(task, closed, return_exceptions=True)
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
