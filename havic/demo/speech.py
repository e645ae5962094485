"""Synthesised speech of the demo's talking faces: voices, syllables, formant vowels, pauses.

An utterance is a random sequence of syllables: an optional consonant (a short burst of
high-passed noise, lips closed) and a voiced vowel (a harmonic source at the voice's pitch with a
per-syllable intonation, through three formant resonators of the vowel scaled by the voice),
separated by random pauses, on a low background noise (there is no digital silence in any clip).
Syllable timing, vowels and stress differ from clip to clip. Everything is deterministic from the
random generator or seed it is given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FORMANT_BANDWIDTHS_HZ",
    "VOWELS",
    "Syllable",
    "Utterance",
    "Voice",
    "audio_envelope",
    "plan_utterance",
    "syllable_envelope",
    "synthesize_speech",
]

# Vowels: formants F1-F3 (Hz, adult average), jaw opening (0-1) and lip width factor.
VOWELS: dict[str, tuple[tuple[float, float, float], float, float]] = {
    "a": ((800.0, 1250.0, 2600.0), 1.00, 1.00),
    "e": ((500.0, 1850.0, 2600.0), 0.65, 1.10),
    "i": ((300.0, 2300.0, 3000.0), 0.40, 1.20),
    "o": ((520.0, 900.0, 2500.0), 0.75, 0.80),
    "u": ((330.0, 800.0, 2300.0), 0.45, 0.70),
}
FORMANT_BANDWIDTHS_HZ = (80.0, 110.0, 160.0)


@dataclass(frozen=True)
class Voice:
    """A speaker's voice: pitch (Hz), formant scale (shorter vocal tract > 1) and breathiness (0-1)."""

    f0_hz: float
    formant_scale: float
    breathiness: float


@dataclass(frozen=True)
class Syllable:
    """One syllable: an optional consonant of ``onset_s``, then a vowel of ``vowel_s`` seconds.

    Attributes:
        start_s: start of the consonant (or of the vowel when ``onset_s`` is 0).
        onset_s: consonant length (0: none).
        vowel_s: vowel length.
        vowel: one of :data:`VOWELS`.
        stress: peak amplitude factor (0-1).
        pitch: intonation factor on the voice's f0.
    """

    start_s: float
    onset_s: float
    vowel_s: float
    vowel: str
    stress: float
    pitch: float

    @property
    def vowel_start_s(self) -> float:
        return self.start_s + self.onset_s


@dataclass(frozen=True)
class Utterance:
    """What is said and how loud: syllables in a voice, the clip level and the noise floor.

    Attributes:
        voice: the speaker's voice.
        syllables: in time order.
        level: RMS of the whole clip's speech.
        noise_level: RMS of the background noise.
        seed: seeds the noise of the waveform.
    """

    voice: Voice
    syllables: tuple[Syllable, ...]
    level: float
    noise_level: float
    seed: int


def plan_utterance(voice: Voice, duration_s: float, rng: np.random.Generator) -> Utterance:
    """A random utterance that fills ``duration_s``: about 1.5 syllables per second, random pauses."""
    syllables = []
    t = float(rng.uniform(0.05, 0.45))
    while True:
        onset = float(rng.uniform(0.03, 0.07)) if rng.random() < 0.6 else 0.0
        vowel_s = float(rng.uniform(0.22, 0.42))
        if t + onset + vowel_s > duration_s - 0.02:
            break
        syllables.append(Syllable(start_s=t, onset_s=onset, vowel_s=vowel_s, vowel=str(rng.choice(list(VOWELS))),
                                  stress=float(rng.uniform(0.55, 1.0)), pitch=float(rng.uniform(0.9, 1.12))))
        pause = rng.uniform(0.5, 0.8) if rng.random() < 0.15 else rng.uniform(0.12, 0.45)
        t += onset + vowel_s + float(pause)
    return Utterance(voice=voice, syllables=tuple(syllables), level=float(rng.uniform(0.05, 0.1)),
                     noise_level=float(rng.uniform(0.0015, 0.004)), seed=int(rng.integers(2**31)))


def _resonate(x: np.ndarray, freq_hz: float, bandwidth_hz: float, sample_rate: int) -> np.ndarray:
    """A two-pole resonator (one formant), unit gain at its centre frequency."""
    from scipy.signal import lfilter

    r = math.exp(-math.pi * bandwidth_hz / sample_rate)
    theta = 2.0 * math.pi * min(freq_hz, 0.45 * sample_rate) / sample_rate
    a = [1.0, -2.0 * r * math.cos(theta), r * r]
    gain = abs(1.0 - 2.0 * r * math.cos(theta) * np.exp(-1j * theta) + r * r * np.exp(-2j * theta))
    return lfilter([gain], a, x)


def syllable_envelope(u: np.ndarray) -> np.ndarray:
    """Syllable amplitude shape over its normalised time u in [0, 1]; 0 outside."""
    inside = (u > 0.0) & (u < 1.0)
    return np.where(inside, np.sin(np.pi * np.clip(u, 0.0, 1.0)) ** 0.6, 0.0)


def synthesize_speech(utt: Utterance, duration_s: float, sample_rate: int = 16000) -> np.ndarray:
    """The waveform of an utterance, with background noise.

    Returns:
        (round(duration_s * sample_rate),) float32 in [-1, 1].
    """
    rng = np.random.default_rng(utt.seed)
    n = round(duration_s * sample_rate)
    speech = np.zeros(n, dtype=np.float64)
    voice = utt.voice
    for syl in utt.syllables:
        if syl.onset_s > 0:
            a, b = round(syl.start_s * sample_rate), round(syl.vowel_start_s * sample_rate)
            burst = np.diff(rng.standard_normal(b - a + 1))            # high-passed noise
            speech[a:b] += 0.3 * syl.stress * burst * np.hanning(b - a)
        start = round(syl.vowel_start_s * sample_rate)
        length = min(round(syl.vowel_s * sample_rate), n - start)
        if length <= 0:
            continue
        t = np.arange(length) / sample_rate
        u = t / syl.vowel_s
        f0 = voice.f0_hz * syl.pitch * (1.0 + 0.06 * (0.5 - u)) * (1.0 + 0.01 * np.sin(2 * np.pi * 5.5 * t))
        phase = 2.0 * np.pi * np.cumsum(f0) / sample_rate
        k = np.arange(1, int(3800.0 / f0.max()) + 1)
        source = (np.sin(phase[:, None] * k) / k ** 1.1).sum(axis=1)
        source += voice.breathiness * 4.0 * rng.standard_normal(length)
        formants, _, _ = VOWELS[syl.vowel]
        y = source
        for f, bw in zip(formants, FORMANT_BANDWIDTHS_HZ):
            y = _resonate(y, f * voice.formant_scale, bw, sample_rate)
        y *= syl.stress * syllable_envelope(u + 1e-9) / (np.sqrt(np.mean(y ** 2)) + 1e-9)
        speech[start:start + length] += y
    rms = math.sqrt(float(np.mean(speech ** 2)))
    if rms > 0:
        speech *= utt.level / rms
    # Low-passed background noise everywhere: no clip holds digital silence anywhere.
    noise = rng.standard_normal(n)
    from scipy.signal import lfilter

    noise = lfilter([1.0], [1.0, -0.9], noise)
    noise *= utt.noise_level / (np.sqrt(np.mean(noise ** 2)) + 1e-12)
    return np.clip(speech + noise, -1.0, 1.0).astype(np.float32)


def audio_envelope(wave: np.ndarray, n_frames: int, fps: float, sample_rate: int) -> np.ndarray:
    """RMS of the waveform over each video frame's interval: (n_frames,)."""
    edges = np.round(np.arange(n_frames + 1) / fps * sample_rate).astype(int)
    edges = np.clip(edges, 0, wave.size)
    return np.array([math.sqrt(float(np.mean(wave[a:b].astype(np.float64) ** 2))) if b > a else 0.0
                     for a, b in zip(edges[:-1], edges[1:])])
