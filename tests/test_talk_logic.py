"""Push-to-talk as logic (issue 21): the one-talker rule in the state machine, a live sound in the
player (pushed as packets arrive, ended with is_end, finished for the resume), the talk's plan and
outcome on the bus."""

from __future__ import annotations

import asyncio

from server.announce.plan import Outcome
from server.announce.talk import TalkPlan
from server.audio.channel import AudioChannel
from server.audio.live import LiveFeed
from server.audio.player import FrameClock, Player
from server.devices.state_machine import (
    AnnouncementStarts,
    Button,
    ButtonPressed,
    DeviceState,
    InterruptSound,
    OnAir,
    ResumeSound,
    SoundFinished,
    StartAnnouncement,
    StopReason,
    StopSound,
    transition,
)

MODES = 5


def step(state: DeviceState, event: object) -> tuple[DeviceState, list[object]]:
    new, effects = transition(state, event, MODES)  # type: ignore[arg-type]
    return new, list(effects)


def in_a_talk(priority: int = 0) -> DeviceState:
    state, _ = step(DeviceState(mode=1), ButtonPressed(Button.PLAY))
    state, effects = step(state, AnnouncementStarts("t1", priority, talk=True))
    assert effects == [InterruptSound(1), StartAnnouncement(2, "t1")]
    assert state.on_air == OnAir("t1", 2, priority, resume=1, talk=True)
    return state


def test_a_second_talk_is_refused_whatever_its_priority() -> None:
    state = in_a_talk(priority=0)
    for priority in (0, 5, 9):
        assert step(state, AnnouncementStarts("t2", priority, talk=True)) == (state, [])


def test_a_higher_announcement_preempts_a_talk_and_a_lower_one_is_refused() -> None:
    state = in_a_talk(priority=3)
    assert step(state, AnnouncementStarts("a1", 3)) == (state, [])
    state, effects = step(state, AnnouncementStarts("a2", 4))
    assert effects == [StopSound(2, StopReason.PREEMPTED), StartAnnouncement(3, "a2")]
    assert state.on_air == OnAir("a2", 3, 4, resume=1)  # the mode sound still comes back afterwards


def test_the_interrupted_sound_resumes_when_the_talk_ends() -> None:
    state, effects = step(in_a_talk(), SoundFinished(2))
    assert effects == [ResumeSound(3, interrupted=1)] and state.on_air is None


def test_the_talk_plan_and_a_busy_outcome_travel_intact() -> None:
    plan = TalkPlan("t1", "acme", 4, False)
    assert TalkPlan.from_data(plan.to_data()) == plan
    outcome = Outcome(["a"], [], ["c"], busy=["b"])
    assert Outcome.from_data(outcome.to_data()) == outcome
    assert "busy" not in Outcome(["a"]).to_data()  # an announcement's outcome is as it was


async def test_a_live_sound_is_pushed_as_its_packets_arrive_and_finishes_after_its_end() -> None:
    clock = FrameClock(lead_s=0.1)
    clock.start()

    async def on_finished(sound_id: int) -> None:
        return None

    player = Player(clock, on_finished, {})
    channel = AudioChannel()
    player.attach(channel)
    feed = LiveFeed("talk t1")
    feed.append(b"past")  # said before this device joined: not replayed
    player.start_live(1, feed)
    assert len(channel) == 0
    feed.append(b"one")
    feed.append(b"two")
    assert len(channel) == 2  # at once, not on the clock's next tick
    first, second = await channel.get(), await channel.get()
    assert first is not None and (first.is_start, first.data) == (True, b"one")
    assert second is not None and (second.is_start, second.is_end, second.data) == (False, False, b"two")
    await player.close()
    await clock.close()


async def test_the_end_of_a_live_sound_finishes_it_and_a_stop_retires_it() -> None:
    clock = FrameClock(lead_s=0.1)
    clock.start()
    done = asyncio.Event()
    finished: list[int] = []

    async def on_finished(sound_id: int) -> None:
        finished.append(sound_id)
        done.set()

    player = Player(clock, on_finished, {})
    channel = AudioChannel()
    player.attach(channel)
    feed = LiveFeed("talk t1")
    player.start_live(1, feed)
    feed.append(b"one")
    feed.end()
    packets = [await asyncio.wait_for(channel.get(), 2) for _ in range(2)]
    assert packets[1] is not None and packets[1].is_end
    await asyncio.wait_for(done.wait(), 2)
    assert finished == [1] and player.playing is None and feed.listeners == 0
    other = LiveFeed("talk t2")
    player.start_live(2, other)
    other.append(b"a")
    assert player.cut(2, StopReason.INTERRUPTED) is None  # a talk does not come back later
    assert other.listeners == 0 and player.playing is None
    fade = await asyncio.wait_for(channel.get(), 2)  # "a" never reached the stream: dropped
    assert fade is not None and fade.is_start and fade.is_end
    other.append(b"late")
    assert len(channel) == 0  # nothing more reaches the device
    await player.close()
    await clock.close()


def test_a_live_talk_shows_as_live_with_its_running_time_not_as_0_of_0_s() -> None:
    """A talk's sound has no length (0): operators read how long it has run, in words."""
    import time

    from auth.identity import Identity
    from server.fleet.device_view import DeviceView
    from server.operator.console.present import present
    from server.state.store import DeviceRecord

    started = time.time()
    talking = DeviceView(DeviceRecord(Identity("acme", "dev-1"), playing=(0, started, 0.0)), online=True)
    device = talking.to_proto(now=started + 3.2)
    assert device.playing.length_s == 0 and abs(device.playing.position_s - 3.2) < 1e-3
    assert present(device)["playing_text"] == "live (push-to-talk): 3 s"
    playing = DeviceView(DeviceRecord(Identity("acme", "dev-1"), playing=(2, started, 2.0)), online=True)
    assert present(playing.to_proto(now=started + 3.2))["playing_text"] == "mode 2: 2 of 2 s"  # capped
