"""Announcements as pure logic: the state machine's preempt/refuse/resume rules, the player's cut and
resume, the plan as it travels on the bus (issue 21)."""

from __future__ import annotations

import asyncio

import pytest

from server.announce.plan import Announcement, Outcome
from server.audio.channel import AudioChannel
from server.audio.library import AudioLibrary
from server.audio.player import FrameClock, Player
from server.audio.tenant_sounds import SoundChoice
from server.devices.state_machine import (
    AnnouncementStarts,
    Button,
    ButtonPressed,
    ConnectionLost,
    DeviceState,
    InterruptSound,
    OnAir,
    ResumeSound,
    SetLeds,
    SoundFinished,
    StartAnnouncement,
    StartSound,
    StopReason,
    StopSound,
    transition,
)

MODES = 5


def step(state: DeviceState, event: object) -> tuple[DeviceState, list[object]]:
    new, effects = transition(state, event, MODES)  # type: ignore[arg-type]
    return new, list(effects)


def playing_mode_sound() -> DeviceState:
    state, _ = step(DeviceState(mode=1), ButtonPressed(Button.PLAY))
    assert state.playing == 1 and state.on_air is None
    return state


def test_an_announcement_interrupts_a_mode_sound_and_resumes_it_afterwards() -> None:
    state, effects = step(playing_mode_sound(), AnnouncementStarts("a1", priority=0))
    assert effects == [InterruptSound(1), StartAnnouncement(2, "a1")]  # LEDs stay "playing"
    assert state.playing == 2 and state.on_air == OnAir("a1", 2, 0, resume=1)
    state, effects = step(state, SoundFinished(2))
    assert effects == [ResumeSound(3, interrupted=1)]
    assert state.playing == 3 and state.on_air is None
    state, effects = step(state, SoundFinished(3))
    assert state.playing is None and effects == [SetLeds(state.leds)]


def test_no_resume_stops_the_mode_sound_for_good() -> None:
    state, effects = step(playing_mode_sound(), AnnouncementStarts("a1", 0, resume=False))
    assert effects == [StopSound(1, StopReason.ANNOUNCED), StartAnnouncement(2, "a1")]
    state, effects = step(state, SoundFinished(2))
    assert state.playing is None and effects == [SetLeds(state.leds)]


def test_an_idle_device_plays_the_announcement_and_goes_back_to_idle() -> None:
    state, effects = step(DeviceState(), AnnouncementStarts("a1", 3))
    assert effects == [StartAnnouncement(1, "a1"), SetLeds(state.leds)]
    assert state.leds.as_tuple() != DeviceState().leds.as_tuple()  # the LEDs say "playing"
    state, _ = step(state, SoundFinished(1))
    assert state == DeviceState(next_sound_id=2)


@pytest.mark.parametrize("priority", [0, 4, 5])
def test_an_equal_or_lower_announcement_is_refused(priority: int) -> None:
    on_air, _ = step(DeviceState(), AnnouncementStarts("a1", 5))
    state, effects = step(on_air, AnnouncementStarts("a2", priority))
    assert (state, effects) == (on_air, [])


def test_a_higher_announcement_preempts_and_resumes_what_the_first_interrupted() -> None:
    state, _ = step(playing_mode_sound(), AnnouncementStarts("low", 2))
    state, effects = step(state, AnnouncementStarts("high", 7))
    assert effects == [StopSound(2, StopReason.PREEMPTED), StartAnnouncement(3, "high")]
    assert state.on_air == OnAir("high", 3, 7, resume=1)  # the mode sound, not the preempted one
    state, effects = step(state, SoundFinished(2))  # the preempted one's stale finish
    assert effects == []
    state, effects = step(state, SoundFinished(3))
    assert effects == [ResumeSound(4, interrupted=1)]


def test_stop_ends_the_announcement_and_leaves_the_device_idle() -> None:
    state, _ = step(playing_mode_sound(), AnnouncementStarts("a1", 0))
    state, effects = step(state, ButtonPressed(Button.STOP))
    assert effects == [StopSound(2, StopReason.STOPPED), SetLeds(state.leds)]
    assert state.playing is None and state.on_air is None
    state, effects = step(state, SoundFinished(2))  # nothing resumes
    assert effects == []


def test_play_and_disconnect_end_the_announcement_too() -> None:
    on_air, _ = step(DeviceState(), AnnouncementStarts("a1", 0))
    played, effects = step(on_air, ButtonPressed(Button.PLAY))
    assert effects == [StopSound(1, StopReason.PREEMPTED), StartSound(2, 0)] and played.on_air is None
    lost, effects = step(on_air, ConnectionLost())
    assert (
        lost.on_air is None and lost.playing is None and effects[0] == StopSound(1, StopReason.DISCONNECTED)
    )
    after, _ = step(on_air, ButtonPressed(Button.MODE))
    assert after.on_air == on_air.on_air and after.mode == 1  # Mode only changes the mode


def test_the_plan_and_outcome_travel_intact() -> None:
    plan = Announcement("id1", "acme", SoundChoice("acme", 2, "sound:abc-64000", "chime.wav"), 1e9, 7, False)
    assert Announcement.from_data(plan.to_data()) == plan
    outcome = Outcome(["b", "a"], ["c"], [])
    assert Outcome.from_data(outcome.to_data()) == outcome
    assert outcome.sorted().started == ["a", "b"]


async def test_a_cut_sound_resumes_at_the_first_packet_the_stream_never_got(library: AudioLibrary) -> None:
    clock = FrameClock(lead_s=0.1)
    finished: list[int] = []

    async def on_finished(sound_id: int) -> None:
        finished.append(sound_id)

    player = Player(clock, on_finished, {})
    channel = AudioChannel()
    player.attach(channel)
    clip = library.clip_for(1)
    player.start(1, clip)
    delivered = [await channel.get() for _ in range(3)]  # the stream took 3; the rest of the lead waits
    assert delivered[0] is not None and delivered[0].is_start
    point = player.cut(1, StopReason.INTERRUPTED)
    assert point is not None and point.clip is clip
    assert point.offset_s == pytest.approx(3 * 0.02)
    fade = await channel.get()
    assert fade is not None and fade.is_end and not fade.is_start  # the dropped ones never went out
    assert len(channel) == 0
    assert player.start(2, point.clip, offset_s=point.offset_s)
    first = await channel.get()
    assert first is not None and first.is_start and first.data == clip.encoding().packets[3]
    assert player.cut(9, StopReason.INTERRUPTED) is None  # not the sound playing
    player.stop(2, StopReason.STOPPED)
    assert not player.start(3, clip, offset_s=clip.duration)  # nothing left to play
    await player.close()
    await asyncio.sleep(0)
