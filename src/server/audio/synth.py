"""Built-in default sounds, synthesised with numpy: distinct per mode, deterministic.

Mode 1 is the long one (64 s) so Stop and preemption matter. Float32 mono at
48 kHz in [-1, 1].
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from comms.audio_format import SAMPLE_RATE

FloatPcm = npt.NDArray[np.float32]
AMPLITUDE = 0.5
LONG_SOUND_SECONDS = 64.0
A4 = 440.0
ATTACK_S = 0.01
RELEASE_S = 0.05


def _t(seconds: float) -> npt.NDArray[np.float64]:
    return np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE


def _envelope(n: int) -> npt.NDArray[np.float64]:
    """Short linear attack/release so notes never click."""
    env = np.ones(n)
    attack, release = (
        min(n // 2, int(ATTACK_S * SAMPLE_RATE)),
        min(n // 2, int(RELEASE_S * SAMPLE_RATE)),
    )
    env[:attack] = np.linspace(0.0, 1.0, attack, endpoint=False)
    env[n - release :] = np.linspace(1.0, 0.0, release)
    return env


def tone(freq: float, seconds: float) -> npt.NDArray[np.float64]:
    t = _t(seconds)
    return np.sin(2 * np.pi * freq * t) * _envelope(len(t))


def notes(freqs: list[float], note_s: float) -> npt.NDArray[np.float64]:
    return np.concatenate([tone(f, note_s) for f in freqs])


def semitone(n: float) -> float:
    return A4 * 2 ** (n / 12)


def beep() -> npt.NDArray[np.float64]:
    """Mode 0: a plain 880 Hz beep, 0.6 s."""
    return tone(880.0, 0.6)


def long_melody() -> npt.NDArray[np.float64]:
    """Mode 1: a 64 s pentatonic melody (deterministic pseudo-random walk)."""
    rng = np.random.default_rng(1)
    scale = [-9, -7, -5, -2, 0, 3, 5, 7, 10, 12]
    note_s = 0.4
    count = int(LONG_SOUND_SECONDS / note_s)
    idx = np.clip(np.cumsum(rng.integers(-2, 3, count)) % (2 * len(scale)), 0, len(scale) - 1)
    return notes([semitone(scale[i]) for i in idx], note_s)


def chirp() -> npt.NDArray[np.float64]:
    """Mode 2: a rising sweep 300 Hz -> 1.5 kHz over 2 s."""
    t = _t(2.0)
    f0, f1 = 300.0, 1500.0
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1]))
    return np.sin(phase) * _envelope(len(t))


def arpeggio() -> npt.NDArray[np.float64]:
    """Mode 3: a major arpeggio up, 4 notes of 0.25 s."""
    return notes([semitone(n) for n in (3, 7, 10, 15)], 0.25)


def ding_dong() -> npt.NDArray[np.float64]:
    """Mode 4: a doorbell, two notes of 0.6 s."""
    return notes([semitone(7), semitone(3)], 0.6)


def mode_tone(mode: int) -> npt.NDArray[np.float64]:
    """Modes >= 5: a 1 s two-note figure whose pitch rises with the mode."""
    return notes([semitone(mode - 5), semitone(mode - 1)], 0.5)


def default_sound(mode: int) -> FloatPcm:
    makers = {0: beep, 1: long_melody, 2: chirp, 3: arpeggio, 4: ding_dong}
    signal = makers[mode]() if mode in makers else mode_tone(mode)
    return (signal * AMPLITUDE).astype(np.float32)
