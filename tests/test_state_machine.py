"""The pure state machine: exhaustive single steps plus hypothesis-driven sequences."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.devices.leds import LED1_IDLE, LED1_PLAYING, leds_for
from server.devices.state_machine import (
    Button,
    ButtonPressed,
    ConnectionLost,
    DeviceState,
    Event,
    Press,
    SetLeds,
    SoundFinished,
    StartSound,
    StopReason,
    StopSound,
    transition,
)

N = 5
IDLE = [DeviceState(mode=m) for m in range(N)]
PLAYING = [DeviceState(mode=m, playing=7, next_sound_id=8) for m in range(N)]


@pytest.mark.parametrize("state", IDLE + PLAYING)
def test_mode_cycles_and_keeps_playback(state: DeviceState) -> None:
    new, effects = transition(state, ButtonPressed(Button.MODE), N)
    assert new.mode == (state.mode + 1) % N
    assert new.playing == state.playing  # Mode while playing keeps the sound
    assert effects == [SetLeds(leds_for(new.mode, state.playing is not None))]


@pytest.mark.parametrize("state", IDLE)
def test_play_when_idle_starts_the_mode_sound(state: DeviceState) -> None:
    new, effects = transition(state, ButtonPressed(Button.PLAY), N)
    assert new.playing == state.next_sound_id
    assert effects == [
        StartSound(state.next_sound_id, state.mode),
        SetLeds(leds_for(state.mode, True)),
    ]
    assert new.leds.led_1 == LED1_PLAYING


@pytest.mark.parametrize("state", PLAYING)
def test_play_while_playing_preempts(state: DeviceState) -> None:
    new, effects = transition(state, ButtonPressed(Button.PLAY), N)
    assert effects == [StopSound(7, StopReason.PREEMPTED), StartSound(8, state.mode)]
    assert new.playing == 8 and new.next_sound_id == 9


@pytest.mark.parametrize("state", PLAYING)
def test_stop_while_playing_returns_to_idle(state: DeviceState) -> None:
    new, effects = transition(state, ButtonPressed(Button.STOP), N)
    assert new.playing is None
    assert effects == [StopSound(7, StopReason.STOPPED), SetLeds(leds_for(state.mode, False))]
    assert new.leds.led_1 == LED1_IDLE


@pytest.mark.parametrize("state", IDLE)
def test_stop_while_idle_is_a_no_op(state: DeviceState) -> None:
    assert transition(state, ButtonPressed(Button.STOP), N) == (state, [])


@pytest.mark.parametrize("state", PLAYING)
def test_finished_sound_returns_to_idle(state: DeviceState) -> None:
    new, effects = transition(state, SoundFinished(7), N)
    assert new.playing is None and effects == [SetLeds(leds_for(state.mode, False))]


@pytest.mark.parametrize("state", IDLE + PLAYING)
def test_stale_finish_is_ignored(state: DeviceState) -> None:
    assert transition(state, SoundFinished(3), N) == (state, [])


@pytest.mark.parametrize("state", PLAYING)
def test_connection_lost_stops_the_sound(state: DeviceState) -> None:
    new, effects = transition(state, ConnectionLost(), N)
    assert new.playing is None and effects[0] == StopSound(7, StopReason.DISCONNECTED)


@pytest.mark.parametrize(
    ("state", "button", "kind"),
    [
        (s, b, k)
        for s, b, k in itertools.product(IDLE + PLAYING, [0, 1, 2, 3, 4, 99, -1], [0, 1, 2, 5])
        if not (k == Press.PRESS and b in (Button.MODE, Button.PLAY, Button.STOP))
    ],
)
def test_everything_else_does_nothing(state: DeviceState, button: int, kind: int) -> None:
    """HOLD, RELEASE, Connect, unknown buttons and unknown types: no state change, no effect."""
    assert transition(state, ButtonPressed(button, kind), N) == (state, [])


events = st.one_of(
    st.builds(ButtonPressed, st.integers(-2, 6), st.integers(0, 3)),
    st.builds(SoundFinished, st.integers(0, 12)),
    st.just(ConnectionLost()),
)


@settings(max_examples=400)
@given(st.lists(events, max_size=60), st.integers(5, 16))
def test_invariants_over_sequences(sequence: list[Event], mode_count: int) -> None:
    state = DeviceState()
    for event in sequence:
        before = state
        state, effects = transition(state, event, mode_count)
        assert 0 <= state.mode < mode_count
        starts = [e for e in effects if isinstance(e, StartSound)]
        stops = [e for e in effects if isinstance(e, StopSound)]
        assert len(starts) <= 1 and len(stops) <= 1
        if stops:  # only the running sound is ever stopped, and before anything starts
            assert stops[0].sound_id == before.playing
            assert effects.index(stops[0]) < (effects.index(starts[0]) if starts else len(effects))
        if starts:
            assert state.playing == starts[0].sound_id and starts[0].mode == state.mode
            assert starts[0].sound_id > (before.playing or 0)  # sound ids never repeat
        if state.playing is None and before.playing is not None:
            assert stops or isinstance(event, SoundFinished)
        # LEDs always reflect the state after the event.
        sets = [e for e in effects if isinstance(e, SetLeds)]
        if sets:
            assert sets[-1].leds == state.leds
        elif (state.mode, state.playing is None) != (before.mode, before.playing is None):
            pytest.fail(f"state changed without an LED update: {before} -> {state}")
