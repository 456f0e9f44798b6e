"""The frame clock: every packet offered at its due tick, and a tick asks only the sounds due."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from server.audio.channel import AudioChannel
from server.audio.library import AudioLibrary
from server.audio.player import FrameClock, Player, Sound

LEAD_S = 0.06  # three 20 ms packets ahead


async def no_callback(sound_id: int) -> None:
    return None


def players(clock: FrameClock, count: int) -> list[tuple[Player, AudioChannel]]:
    pairs = []
    for _ in range(count):
        player, channel = Player(clock, no_callback, {}), AudioChannel(max_late_s=60.0)
        player.attach(channel)
        pairs.append((player, channel))
    return pairs


@pytest.fixture
def visits(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """How often the clock asked each sound (by sound id) for its packets."""
    counted: Counter[int] = Counter()
    advance = Sound.advance

    def counting(self: Sound, now: float, lead_s: float, limit: int | None = None) -> tuple[int, int]:
        counted[self.sound_id] += 1
        return advance(self, now, lead_s, limit)

    monkeypatch.setattr(Sound, "advance", counting)
    return counted


async def test_a_tick_visits_only_the_sounds_with_a_packet_due(
    library: AudioLibrary, visits: Counter[int]
) -> None:
    clock = FrameClock(lead_s=LEAD_S)  # not started: the test drives the ticks
    clip = library.clip_for(1)
    frame_s = clip.encoding().frame_s
    now = asyncio.get_running_loop().time()
    pairs = players(clock, 10)
    for sound_id, (player, _) in enumerate(pairs):
        # Timelines a tenth of a frame apart: at any instant only some have a packet due.
        player.start(sound_id, clip, t0=now + sound_id * frame_s / 10)
    visits.clear()  # the starts offered their first packets themselves
    ticks = 40
    for i in range(1, ticks + 1):
        clock.tick(now + i * frame_s / 2)  # the clock's own pace: two ticks per frame
    # One visit per packet due (plus none for the others): about half the 10 x 40 sound-ticks.
    assert sum(visits.values()) <= 10 * ticks // 2 + 10
    for sound_id, (_, channel) in enumerate(pairs):
        due = [d for d, _ in channel._items]
        assert due == sorted(due) and len(due) == len(set(due))  # each packet once, in order
        last_tick = now + ticks * frame_s / 2
        origin = now + sound_id * frame_s / 10
        expected = int((last_tick + LEAD_S - origin) / frame_s + 1e-9) + 1  # every packet due by then
        assert len(due) == expected, sound_id


async def test_a_stopped_sound_is_never_visited_again_and_a_new_one_is(
    library: AudioLibrary, visits: Counter[int]
) -> None:
    clock = FrameClock(lead_s=LEAD_S)
    clip = library.clip_for(1)
    frame_s = clip.encoding().frame_s
    now = asyncio.get_running_loop().time()
    ((player, _),) = players(clock, 1)
    player.start(1, clip)
    clock.tick(now + frame_s)
    player.stop(1, "stop_button")
    player.start(2, clip)  # the same player, a new sound at once
    visits.clear()
    for i in range(2, 12):
        clock.tick(now + i * frame_s)
    assert visits[1] == 0 and 1 <= visits[2] <= 10
    assert len(clock) == 1
    player.stop(2, "stop_button")
    clock.tick(now + 13 * frame_s)
    assert len(clock) == 0
    await player.close()


async def test_a_sound_finishes_at_its_real_end(library: AudioLibrary) -> None:
    clock = FrameClock(lead_s=LEAD_S)
    finished: list[int] = []
    told = asyncio.Event()

    async def on_finished(sound_id: int) -> None:
        finished.append(sound_id)
        told.set()

    player = Player(clock, on_finished, {})
    clip = library.clip_for(1)
    encoding = clip.encoding()
    now = asyncio.get_running_loop().time()
    player.start(7, clip, t0=now)
    end = now + len(encoding.packets) * encoding.frame_s
    clock.tick(end - encoding.frame_s / 2)  # every packet offered, the end not reached
    assert player.playing == 7 and len(clock) == 1
    clock.tick(end)
    assert player.playing is None and len(clock) == 0
    await asyncio.wait_for(told.wait(), 2)  # the state machine hears of it
    assert finished == [7]
    await player.close()
