"""One device's live state: every change goes through the pure state machine under one lock.

The controller carries out the effects (LED sets wake the status stream, sounds
go to the player), keeps the record in memory and queues its changes for the
store; it tells whoever listens (the fleet) when the mode or playing changes.
An announcement (``announce``) goes the same way: the state machine decides
(preempt, refuse), the controller plays the cue's clip on the cue's timeline and
keeps where the interrupted sound was cut, to resume it afterwards.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

from auth.identity import Identity
from server.audio.library import ClipSource
from server.audio.live import LiveFeed
from server.audio.player import FrameClock, Player, ResumePoint
from server.devices.cue import BUSY, REFUSED, STARTED, Cue
from server.devices.leds import LedFrame
from server.devices.live_session import DeviceSession
from server.devices.state_machine import (
    AnnouncementStarts,
    ButtonPressed,
    DeviceState,
    Effect,
    Event,
    InterruptSound,
    ModeSelected,
    ResumeSound,
    SetLeds,
    SoundFinished,
    StartAnnouncement,
    StartSound,
    StopReason,
    StopSound,
    transition,
)
from server.limits import TokenBucket
from server.state.guard import StoreGuard
from server.state.store import DeviceRecord, Telemetry

BATTERY_STEP = 0.01  # a battery change this big is news for the store and watchers
TELEMETRY_EVERY_S = 60.0  # else battery and last seen reach the store at least this often


class DeviceController:
    """One device's live state; every change goes through ``transition`` under one lock."""

    def __init__(
        self,
        record: DeviceRecord,
        sounds: ClipSource,
        store: StoreGuard,
        mode_count: int,
        clock: FrameClock,
        event_limit: tuple[float, int],
        on_change: Callable[[DeviceController, str], None] = lambda controller, change: None,
    ) -> None:
        self._on_change = on_change
        self._telemetry_saved = 0.0
        self.record = record
        self.events = TokenBucket(*event_limit)
        self.state = DeviceState(mode=record.mode % mode_count)
        self.session: DeviceSession | None = None
        self._sounds = sounds
        self._store = store
        self._mode_count = mode_count
        self._lock = asyncio.Lock()
        self._leds_changed = False  # a SetLeds effect of the event being handled
        self._cues: dict[str, Cue] = {}  # announcements being handed to the state machine
        self._resume: tuple[int, ResumePoint] | None = None  # (interrupted sound, where it was cut)
        fields = {"tenant": record.identity.tenant, "device": record.identity.device_id}
        self.player = Player(clock, self._sound_finished, fields)

    @property
    def identity(self) -> Identity:
        return self.record.identity

    @property
    def leds(self) -> LedFrame:
        return self.state.leds

    async def handle(self, event: Event, later: list[Callable[[], None]] | None = None) -> None:
        """Apply ``event``. With ``later``, the news of it (the LED wake-up of the status stream,
        the fleet's watchers) is appended there instead of told at once: an announcement starting
        many devices lets every audio stream write its first packet before any of that runs."""
        async with self._lock:
            old_mode = self.state.mode
            changes: dict[str, object] = {}
            self._leds_changed = False
            pending: Event | None = event
            while pending is not None:  # a sound that cannot resume finishes at once
                self.state, effects = transition(self.state, pending, self._mode_count)
                pending = await self._carry_out(effects, changes)
            if self.state.playing is None and self.record.playing is not None:
                changes["playing"] = None  # finished by itself
            if self.state.mode != old_mode:
                changes["mode"] = self.state.mode
            if changes:
                self.record = self.record.with_changes(**changes)
                self._store.update_later(self.identity, self.record.session_id, **changes)
            change = ("mode" if "mode" in changes else "playing") if changes else ""
            news = functools.partial(self._tell, self._leds_changed, change)
            if later is None:
                news()
            else:
                later.append(news)

    def _tell(self, leds_changed: bool, change: str) -> None:
        if leds_changed and self.session is not None:
            self.session.leds_changed.set()
        if change:
            self._on_change(self, change)

    async def _carry_out(self, effects: list[Effect], changes: dict[str, object]) -> Event | None:
        """Do what the state machine said; the event that follows at once, if any."""
        follow: Event | None = None
        for effect in effects:
            if isinstance(effect, StopSound):
                self.player.stop(effect.sound_id, effect.reason)
                changes["playing"] = None
            elif isinstance(effect, InterruptSound):
                point = self.player.cut(effect.sound_id, StopReason.INTERRUPTED)
                self._resume = (effect.sound_id, point) if point is not None else None
                changes["playing"] = None
            elif isinstance(effect, StartSound):
                clip = await self._sounds.clip(self.identity.tenant, effect.mode)
                self.player.start(effect.sound_id, clip)
                changes["playing"] = (effect.mode, time.time(), round(clip.duration, 3))
            elif isinstance(effect, StartAnnouncement):
                cue = self._cues.pop(effect.announcement)
                if isinstance(cue.clip, LiveFeed):
                    self.player.start_live(effect.sound_id, cue.clip)
                else:
                    self.player.start(effect.sound_id, cue.clip, t0=cue.t0)
                changes["playing"] = (self.state.mode, time.time(), round(cue.clip.duration, 3))
            elif isinstance(effect, ResumeSound):
                resume, self._resume = self._resume, None
                if resume is None or resume[0] != effect.interrupted:
                    follow = SoundFinished(effect.sound_id)  # it had ended by itself as it was cut
                    continue
                point = resume[1]
                if not self.player.start(effect.sound_id, point.clip, offset_s=point.offset_s):
                    follow = SoundFinished(effect.sound_id)  # cut at its very end: nothing left
                    continue
                rest = round(point.clip.duration - point.offset_s, 3)
                changes["playing"] = (self.state.mode, time.time(), rest)
            elif isinstance(effect, SetLeds):
                self._leds_changed = True
        return follow

    async def announce(self, cue: Cue, later: list[Callable[[], None]] | None = None) -> str:
        """Play ``cue`` now (call it at the cue's instant): ``STARTED``, or ``REFUSED`` while an
        announcement of equal or higher priority plays, ``BUSY`` for a talk while another talk is
        on air. ``later``: as for ``handle``."""
        self._cues[cue.announcement] = cue
        try:
            event = AnnouncementStarts(cue.announcement, cue.priority, cue.resume, cue.talk)
            await self.handle(event, later)
        finally:
            self._cues.pop(cue.announcement, None)
        on_air = self.state.on_air
        if on_air is not None and on_air.announcement == cue.announcement:
            return STARTED
        return BUSY if cue.talk and on_air is not None and on_air.talk else REFUSED

    async def press(self, button: int, kind: int) -> None:
        await self.handle(ButtonPressed(button, kind))

    async def select_mode(self, mode: int) -> None:
        await self.handle(ModeSelected(mode))

    async def _sound_finished(self, sound_id: int) -> None:
        await self.handle(SoundFinished(sound_id))

    @property
    def log_fields(self) -> dict[str, str]:
        return {"tenant": self.identity.tenant, "device": self.identity.device_id}

    def adopt(self, record: DeviceRecord) -> None:
        """Take the store's record (another replica changed it): mode and session follow it."""
        self.record = record
        self.state = DeviceState(mode=record.mode % self._mode_count)

    def remember_status(self, battery_level: float, buttons: tuple[int, int, int, int]) -> None:
        """Latest GET answer. Kept in memory; the store and watchers hear of it when it changes
        noticeably (buttons, a battery step) or every ``TELEMETRY_EVERY_S``, and at the session's end."""
        before, now = self.record, time.time()
        self.record = before.with_changes(battery_level=battery_level, buttons=buttons, last_seen=now)
        moved = before.battery_level is None or abs(battery_level - before.battery_level) >= BATTERY_STEP
        if before.buttons != buttons or moved or now - self._telemetry_saved > TELEMETRY_EVERY_S:
            self._telemetry_saved = now
            self.save_telemetry()
            self._on_change(self, "telemetry")

    def disconnected(self, reason: str) -> None:
        """The session ended with ``reason`` (a status code name): remembered, queued, told."""
        self.record = self.record.with_changes(disconnect_reason=reason, playing=None, last_seen=time.time())
        self._store.update_later(
            self.identity, self.record.session_id, disconnect_reason=reason, playing=None
        )
        self.save_telemetry()

    def save_telemetry(self) -> None:
        """Queue battery, buttons and last seen for the store (never raises: the guard retries)."""
        record = self.record
        telemetry = Telemetry(record.battery_level, record.buttons, record.last_seen or time.time())
        self._store.telemetry_later(self.identity, record.session_id, telemetry)
