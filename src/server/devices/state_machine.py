"""The device application logic as a pure function: (state, event) -> (state, effects).

No I/O here. The controller feeds button events and "sound finished" events in,
and carries out the effects (LED sets, audio start/stop) it gets back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from server.devices.leds import LedFrame, leds_for


class Button(enum.IntEnum):
    """Wire values of ButtonEvent.ButtonId."""

    CONNECT = 0  # BUTTON_1: handled on the device, never sent; ignored if it is
    MODE = 1  # BUTTON_2
    STOP = 2  # BUTTON_3
    PLAY = 3  # BUTTON_4


class Press(enum.IntEnum):
    """Wire values of ButtonEvent.ButtonEventType."""

    PRESS = 0
    HOLD = 1
    RELEASE = 2


class StopReason(enum.StrEnum):
    STOPPED = "stopped"  # the user pressed Stop
    PREEMPTED = "preempted"  # a new Play replaced it
    DISCONNECTED = "disconnected"  # the device's session ended or was superseded


@dataclass(frozen=True, slots=True)
class DeviceState:
    mode: int = 0
    playing: int | None = None  # id of the running sound, None when idle
    next_sound_id: int = 1

    @property
    def leds(self) -> LedFrame:
        return leds_for(self.mode, self.playing is not None)


# --- events ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ButtonPressed:
    button: int  # raw wire value: unknown buttons must be tolerated
    kind: int = Press.PRESS


@dataclass(frozen=True, slots=True)
class ModeSelected:
    """An operator chose the mode (SetMode): like presses of Mode until it shows ``mode``."""

    mode: int


@dataclass(frozen=True, slots=True)
class SoundFinished:
    sound_id: int


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    """The device's session ended: nobody is listening, so a running sound stops."""


Event = ButtonPressed | ModeSelected | SoundFinished | ConnectionLost


# --- effects ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetLeds:
    leds: LedFrame


@dataclass(frozen=True, slots=True)
class StartSound:
    sound_id: int
    mode: int


@dataclass(frozen=True, slots=True)
class StopSound:
    sound_id: int
    reason: StopReason


Effect = SetLeds | StartSound | StopSound


def transition(state: DeviceState, event: Event, mode_count: int) -> tuple[DeviceState, list[Effect]]:
    """Apply one event. Only PRESS of Mode/Play/Stop does anything; all else is a no-op."""
    if mode_count < 1:
        raise ValueError("mode_count must be >= 1")
    if isinstance(event, SoundFinished):
        if state.playing != event.sound_id:
            return state, []  # a stale finish of a sound already stopped or preempted
        new = replace(state, playing=None)
        return new, [SetLeds(new.leds)]
    if isinstance(event, ModeSelected):
        if not 0 <= event.mode < mode_count:
            raise ValueError(f"mode {event.mode} outside 0..{mode_count - 1}")
        if event.mode == state.mode:
            return state, []
        new = replace(state, mode=event.mode)
        return new, [SetLeds(new.leds)]
    if isinstance(event, ConnectionLost):
        if state.playing is None:
            return state, []
        new = replace(state, playing=None)
        return new, [StopSound(state.playing, StopReason.DISCONNECTED), SetLeds(new.leds)]

    if event.kind != Press.PRESS:
        return state, []
    if event.button == Button.MODE:
        new = replace(state, mode=(state.mode + 1) % mode_count)
        return new, [SetLeds(new.leds)]
    if event.button == Button.PLAY:
        effects: list[Effect] = []
        if state.playing is not None:
            effects.append(StopSound(state.playing, StopReason.PREEMPTED))
        sound_id = state.next_sound_id
        new = replace(state, playing=sound_id, next_sound_id=sound_id + 1)
        effects.append(StartSound(sound_id, new.mode % mode_count))
        if state.playing is None:
            effects.append(SetLeds(new.leds))
        return new, effects
    if event.button == Button.STOP:
        if state.playing is None:
            return state, []
        new = replace(state, playing=None)
        return new, [StopSound(state.playing, StopReason.STOPPED), SetLeds(new.leds)]
    return state, []  # CONNECT (device-local) and unknown buttons: acked, ignored
