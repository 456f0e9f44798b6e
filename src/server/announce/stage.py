"""This node's part of an announcement: its devices start at the announcement's instant.

The clip is loaded first (a stored upload may take a few milliseconds), then
the stage sleeps until the instant and hands every targeted device live here
the same ``Cue`` — one timeline, ``t0`` in this node's loop time — one after
the other without awaiting anything in between (a controller that is free
starts at once). Only then does anything else of the announcement run (the
status streams' LED updates, the watchers' news): the first packets of every
device are handed to gRPC first, so the spread of their arrival is the cost of
those writes alone. A node that hears of the announcement after its instant (a
slow bus) still starts on the shared timeline: its devices join in step,
missing only what is already past, and the lateness is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from auth.identity import Identity
from server.announce.plan import Announcement, Outcome
from server.audio.tenant_sounds import TenantSounds
from server.devices.cue import OFFLINE, STARTED, Cue
from server.devices.registry import DeviceRegistry
from server.errors import describe

log = logging.getLogger(__name__)


class Stage:
    def __init__(self, registry: DeviceRegistry, sounds: TenantSounds) -> None:
        self._registry = registry
        self._sounds = sounds

    async def perform(self, announcement: Announcement, devices: list[str]) -> Outcome:
        """Start ``devices`` (ids in the announcement's tenant) at its instant; what happened to each."""
        try:
            clip = await self._sounds.clip_of(announcement.sound)
        except Exception as exc:  # the stored sound cannot be read here: nobody here plays it
            log.error("announce.unplayable", extra={"announcement": announcement.id, "error": describe(exc)})
            return Outcome(offline=list(devices))
        loop = asyncio.get_running_loop()
        t0 = loop.time() + (announcement.start_at - time.time())
        wait = t0 - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        else:
            log.warning(
                "announce.late", extra={"announcement": announcement.id, "late_ms": round(-wait * 1000)}
            )
        cue = Cue(announcement.id, clip, t0, announcement.priority, announcement.resume)
        outcome = Outcome()
        later: list[Callable[[], None]] = []
        for device in devices:
            result = await self._registry.announce(Identity(announcement.tenant, device), cue, later)
            {STARTED: outcome.started, OFFLINE: outcome.offline}.get(result, outcome.refused).append(device)
        handed = loop.time()
        await asyncio.sleep(0)  # every audio stream hands gRPC its first packet ...
        written = loop.time()
        for news in later:  # ... before the LED updates and the watchers' news take the loop
            news()
        log.info(
            "announce.performed",
            extra={
                "announcement": announcement.id,
                "tenant": announcement.tenant,
                "started": len(outcome.started),
                "refused": len(outcome.refused),
                "offline": len(outcome.offline),
                "late_ms": round(max(0.0, loop.time() - t0) * 1000, 1),
                "handed_ms": round((handed - t0) * 1000, 2),  # every device had its cue
                "written_ms": round((written - t0) * 1000, 2),  # ... and gRPC its first packet
            },
        )
        return outcome
