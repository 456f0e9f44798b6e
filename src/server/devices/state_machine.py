"""The device application logic as a pure function: (state, event) -> (state, effects).

No I/O here. The controller feeds button events and "sound finished" events in,
and carries out the effects (LED sets, audio start/stop) it gets back.

Announcements (issue 21) are sounds an operator sends to many devices at once.
One preempts what the device plays: a mode sound is interrupted (the controller
remembers where) and resumes from there once the announcement ends, unless the
announcement says not to; an announcement on air is preempted only by one of a
higher priority (which then resumes what the first had interrupted); an equal
or lower one is refused. A talk (a live announcement) is one too, and a device
in a talk refuses any other talk whatever its priority: one talker per device
(the caller hears "busy"). The device's own buttons still rule: Stop ends the
announcement and leaves the device idle, Play plays its mode instead.
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
    ANNOUNCED = "announced"  # an announcement took over (and the sound does not resume after it)
    INTERRUPTED = "interrupted"  # an announcement took over; the sound resumes after it


@dataclass(frozen=True, slots=True)
class OnAir:
    """The announcement a device is playing."""

    announcement: str
    sound_id: int
    priority: int
    resume: int | None  # the sound it interrupted, resumed once it ends (None: idle afterwards)
    talk: bool = False  # a live talk (one talker per device)


@dataclass(frozen=True, slots=True)
class DeviceState:
    mode: int = 0
    playing: int | None = None  # id of the running sound, None when idle
    next_sound_id: int = 1
    on_air: OnAir | None = None  # set while ``playing`` is an announcement

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


@dataclass(frozen=True, slots=True)
class AnnouncementStarts:
    """An announcement reaches the device (refused, no effects, if one of equal or higher priority plays)."""

    announcement: str
    priority: int
    resume: bool = True  # resume the interrupted sound afterwards
    talk: bool = False  # a live talk: refused while another talk is on air, whatever the priorities


Event = ButtonPressed | ModeSelected | SoundFinished | ConnectionLost | AnnouncementStarts


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


@dataclass(frozen=True, slots=True)
class InterruptSound:
    """Stop the sound and remember where it was cut (``ResumeSound`` continues it)."""

    sound_id: int


@dataclass(frozen=True, slots=True)
class StartAnnouncement:
    sound_id: int
    announcement: str


@dataclass(frozen=True, slots=True)
class ResumeSound:
    """Play the rest of ``interrupted`` (from where it was cut) as the new sound ``sound_id``."""

    sound_id: int
    interrupted: int


Effect = SetLeds | StartSound | StopSound | InterruptSound | StartAnnouncement | ResumeSound


def announce(state: DeviceState, event: AnnouncementStarts) -> tuple[DeviceState, list[Effect]]:
    on_air = state.on_air
    if on_air is not None and (on_air.priority >= event.priority or (on_air.talk and event.talk)):
        return state, []
    effects: list[Effect] = []
    resume: int | None = None
    if on_air is not None:  # a lower announcement: it ends; what it interrupted comes back after this one
        effects.append(StopSound(on_air.sound_id, StopReason.PREEMPTED))
        resume = on_air.resume
    elif state.playing is not None and event.resume:
        effects.append(InterruptSound(state.playing))
        resume = state.playing
    elif state.playing is not None:
        effects.append(StopSound(state.playing, StopReason.ANNOUNCED))
    sound_id = state.next_sound_id
    new = replace(
        state,
        playing=sound_id,
        next_sound_id=sound_id + 1,
        on_air=OnAir(
            event.announcement, sound_id, event.priority, resume if event.resume else None, event.talk
        ),
    )
    effects.append(StartAnnouncement(sound_id, event.announcement))
    if state.playing is None:
        effects.append(SetLeds(new.leds))
    return new, effects


def transition(state: DeviceState, event: Event, mode_count: int) -> tuple[DeviceState, list[Effect]]:
    """Apply one event. Only PRESS of Mode/Play/Stop does anything; all else is a no-op."""
    if mode_count < 1:
        raise ValueError("mode_count must be >= 1")
    if isinstance(event, AnnouncementStarts):
        return announce(state, event)
    if isinstance(event, SoundFinished):
        if state.playing != event.sound_id:
            return state, []  # a stale finish of a sound already stopped or preempted
        if state.on_air is not None and state.on_air.resume is not None:
            sound_id = state.next_sound_id
            resumed = replace(state, playing=sound_id, next_sound_id=sound_id + 1, on_air=None)
            return resumed, [ResumeSound(sound_id, state.on_air.resume)]
        new = replace(state, playing=None, on_air=None)
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
        new = replace(state, playing=None, on_air=None)
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
        new = replace(state, playing=sound_id, next_sound_id=sound_id + 1, on_air=None)
        effects.append(StartSound(sound_id, new.mode % mode_count))
        if state.playing is None:
            effects.append(SetLeds(new.leds))
        return new, effects
    if event.button == Button.STOP:
        if state.playing is None:
            return state, []
        new = replace(state, playing=None, on_air=None)
        return new, [StopSound(state.playing, StopReason.STOPPED), SetLeds(new.leds)]
    return state, []  # CONNECT (device-local) and unknown buttons: acked, ignored
