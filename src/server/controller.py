"""One device's live state: every change goes through the pure state machine under one lock.

The controller carries out the effects (LED sets wake the status stream, sounds
go to the player), keeps the record in memory and queues its changes for the
store; it tells whoever listens (the fleet) when the mode or playing changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from auth.identity import Identity
from server.audio_library import AudioLibrary
from server.audio_player import FrameClock, Player
from server.device_session import DeviceSession
from server.leds import LedFrame
from server.limits import TokenBucket
from server.state_machine import (
    ButtonPressed,
    DeviceState,
    Event,
    SetLeds,
    SoundFinished,
    StartSound,
    StopSound,
    transition,
)
from server.store import DeviceRecord, Telemetry
from server.store_guard import StoreGuard


class DeviceController:
    """One device's live state; every change goes through ``transition`` under one lock."""

    def __init__(
        self,
        record: DeviceRecord,
        library: AudioLibrary,
        store: StoreGuard,
        mode_count: int,
        clock: FrameClock,
        event_limit: tuple[float, int],
        on_change: Callable[[Identity, dict[str, object]], None] = lambda identity, fields: None,
    ) -> None:
        self._on_change = on_change
        self.record = record
        self.events = TokenBucket(*event_limit)
        self.state = DeviceState(mode=record.mode % mode_count)
        self.session: DeviceSession | None = None
        self._library = library
        self._store = store
        self._mode_count = mode_count
        self._lock = asyncio.Lock()
        fields = {"tenant": record.identity.tenant, "device": record.identity.device_id}
        self.player = Player(clock, self._sound_finished, fields)

    @property
    def identity(self) -> Identity:
        return self.record.identity

    @property
    def leds(self) -> LedFrame:
        return self.state.leds

    async def handle(self, event: Event) -> None:
        async with self._lock:
            old_mode, old_playing = self.state.mode, self.state.playing is not None
            self.state, effects = transition(self.state, event, self._mode_count)
            for effect in effects:
                if isinstance(effect, StopSound):
                    self.player.stop(effect.sound_id, effect.reason)
                elif isinstance(effect, StartSound):
                    self.player.start(effect.sound_id, self._library.clip_for(effect.mode))
                elif isinstance(effect, SetLeds) and self.session is not None:
                    self.session.leds_changed.set()
            if self.state.mode != old_mode:
                self.record = self.record.with_changes(mode=self.state.mode)
                self._store.mode_later(self.identity, self.record.session_id, self.state.mode)
            playing = self.state.playing is not None
            if self.state.mode != old_mode or playing != old_playing:
                self._on_change(self.identity, {"mode": self.state.mode, "playing": playing})

    async def press(self, button: int, kind: int) -> None:
        await self.handle(ButtonPressed(button, kind))

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
        """Latest GET answer, in memory; the store gets it when the session ends (``save_telemetry``)."""
        self.record = self.record.with_changes(
            battery_level=battery_level, buttons=buttons, last_seen=time.time()
        )

    def save_telemetry(self) -> None:
        """Queue battery, buttons and last seen for the store (never raises: the guard retries)."""
        record = self.record
        telemetry = Telemetry(record.battery_level, record.buttons, record.last_seen or time.time())
        self._store.telemetry_later(self.identity, record.session_id, telemetry)
