"""Synthetic talking-face videos, real and fake, written as ordinary mp4 files with audio.

Everything is generated in code and deterministic from a seed; nothing is downloaded. The face is
the photograph that ships with scikit-image (``skimage.data.astronaut()``).

**Identities.** Each identity is the photograph seen through its own affine map (crop, scale,
rotation, aspect ratio, mirror image) and colour transform (hue, saturation, gamma, channel
gains), rendered into a square *portrait*, and has its own **voice** (fundamental frequency,
vocal-tract length as a formant scale, breathiness).

**Speech.** An utterance is a random sequence of syllables: an optional consonant (a short burst
of high-passed noise, lips closed) and a voiced vowel (a harmonic source at the voice's pitch
with a per-syllable intonation, through three formant resonators of the vowel scaled by the
voice), separated by random pauses, on a low background noise (there is no digital silence in
any clip). Syllable timing, vowels and stress differ from clip to clip.

**Talking.** The mouth follows the vowels that drive it: the jaw drops (the lower face is
displaced along the face's vertical axis) and a dark mouth cavity opens in proportion to the
vowel's amplitude envelope times the vowel's openness (/a/ widest, /i/ and /u/ least), and the
cavity's width follows the vowel's lip spreading (/i/ wide, /u/ rounded). The mouth leads the
sound by 50 ms, as in real speech. The head moves smoothly (translation, rotation, scale).

**Categories** (audio label, video label), as in FakeAVCeleb:

==================  =====  =========================================================================
``RVRA``            (0,0)  real: the face's own voice, lips driven by the audio heard
``RVFA``            (1,0)  the audio is replaced by another utterance in another identity's voice;
                           the lips still follow the original (unheard) utterance
``FVRA-swap``       (0,1)  face swap: the inner face (eyes, nose, mouth) of another identity is
                           aligned on three landmarks, rendered at a lower resolution and blended in
                           with a feathered elliptical mask; the lips follow the real audio
``FVRA-lipsync``    (0,1)  lip sync, as FakeAVCeleb's Wav2Lip videos: the audio track is a real
                           recording of another identity, the lips are re-driven by it (in sync), and
                           the lower face (nose down) is re-rendered as lip-sync generators paste it:
                           lower resolution, washed-out colours, a generic lighter mouth interior
``FVFA``            (1,1)  both: face swap, and the audio replaced by another identity's voice
==================  =====  =========================================================================

**What separates real from fake** is only the audio-visual coherence and the manipulation traces:
mouth motion against the audio envelope (RVFA, FVFA), face identity against voice (RVFA,
FVRA-swap, FVRA-lipsync, FVFA), the blending seam, colour mismatch, misaligned features and lower
resolution of a pasted face (FVRA-swap, FVFA) and the re-rendered lower face (FVRA-lipsync).
Everything else is drawn from the same distributions for every category: durations (all clips
equal), codec settings, pose, camera noise (whose per-clip level dominates the file size),
loudness, background noise and the time of the first syllable. ``tests/test_synthetic.py`` checks
this.
"""
from __future__ import annotations

import functools
import logging
import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "CATEGORIES",
    "CATEGORY_LABELS",
    "FAKE_CATEGORIES",
    "LABEL_COLUMNS",
    "ClipSpec",
    "Identity",
    "Pose",
    "RenderedClip",
    "Syllable",
    "SyntheticConfig",
    "Utterance",
    "Voice",
    "audio_envelope",
    "clip_relpath",
    "make_identities",
    "mouth_track",
    "plan_clips",
    "plan_utterance",
    "portrait",
    "pose_track",
    "render_clip",
    "synthesize_speech",
    "write_clips",
    "write_labels",
]

log = logging.getLogger(__name__)

CATEGORIES = ("RVRA", "RVFA", "FVRA-swap", "FVRA-lipsync", "FVFA")
CATEGORY_LABELS: dict[str, tuple[int, int]] = {  # (audio_label, video_label)
    "RVRA": (0, 0), "RVFA": (1, 0), "FVRA-swap": (0, 1), "FVRA-lipsync": (0, 1), "FVFA": (1, 1),
}
FAKE_CATEGORIES = CATEGORIES[1:]

# Vowels: formants F1-F3 (Hz, adult average), jaw opening (0-1) and lip width factor.
VOWELS: dict[str, tuple[tuple[float, float, float], float, float]] = {
    "a": ((800.0, 1250.0, 2600.0), 1.00, 1.00),
    "e": ((500.0, 1850.0, 2600.0), 0.65, 1.10),
    "i": ((300.0, 2300.0, 3000.0), 0.40, 1.20),
    "o": ((520.0, 900.0, 2500.0), 0.75, 0.80),
    "u": ((330.0, 800.0, 2300.0), 0.45, 0.70),
}
FORMANT_BANDWIDTHS_HZ = (80.0, 110.0, 160.0)
MOUTH_LEAD_S = 0.05          # the jaw starts moving this long before the vowel is heard

# Landmarks of the face in skimage.data.astronaut() (512 x 512), in pixels (x, y).
ASTRONAUT_EYES = ((204.0, 101.0), (246.0, 103.0))
ASTRONAUT_MOUTH = (223.0, 147.0)          # where the upper teeth meet the lower lip
ASTRONAUT_MOUTH_HALF_WIDTH = 21.0
ASTRONAUT_FACE_CENTRE = (225.0, 125.0)
ASTRONAUT_INNER_FACE = ((225.0, 127.0), (37.0, 41.0))   # centre and semi-axes of the swapped region

PORTRAIT_SIZE = 224          # identities are rendered at this size, then posed into the frame
# Generated regions are pasted at a lower resolution than the video (portrait pixels per generated pixel):
# face-swap generators render the inner face, lip-sync generators the lower face, at a few hundred pixels.
SWAP_RESOLUTION_FACTOR = 5.0
LIPSYNC_RESOLUTION_FACTOR = 6.0
FIELD_OF_VIEW = 184          # portrait pixels that span the frame width


@dataclass(frozen=True)
class SyntheticConfig:
    """Clip format and generation settings.

    Attributes:
        duration_s: length of every clip (video and audio).
        fps: frame rate of the files.
        frame_size: side of the square frames in pixels (even).
        sample_rate: audio sample rate in Hz.
        crf: libx264 constant rate factor, the same for every clip.
        n_identities: identities (faces with their voices).
        seed: seeds identities and clips.
    """

    duration_s: float = 6.4
    fps: float = 10.0
    frame_size: int = 96
    sample_rate: int = 16000
    crf: int = 23
    n_identities: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.frame_size % 2 or self.frame_size < 32:
            raise ValueError(f"frame_size must be even and >= 32, got {self.frame_size}")
        if self.duration_s <= 0 or self.fps <= 0 or self.sample_rate < 8000:
            raise ValueError(f"need positive duration and fps and sample_rate >= 8000, got {self.duration_s}, "
                             f"{self.fps}, {self.sample_rate}")
        if self.n_identities < 3:
            raise ValueError(f"n_identities must be >= 3 (fakes pair three identities), got {self.n_identities}")

    @property
    def n_frames(self) -> int:
        return round(self.duration_s * self.fps)

    @property
    def n_samples(self) -> int:
        return round(self.duration_s * self.sample_rate)


# ------------------------------------------------------------------------------------------------
# Identities
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Voice:
    """A speaker's voice: pitch (Hz), formant scale (shorter vocal tract > 1) and breathiness (0-1)."""

    f0_hz: float
    formant_scale: float
    breathiness: float


@dataclass(frozen=True)
class Identity:
    """A face (the photograph through an affine map and a colour transform) and its voice.

    Attributes:
        index: position in the identity list.
        affine: 2x3 map from photograph pixels to portrait pixels, row-major.
        hue_turns: hue rotation in turns.
        saturation: saturation factor.
        gamma: exponent applied to the value channel.
        gains: RGB channel gains.
        voice: the identity's voice.
    """

    index: int
    affine: tuple[float, ...]
    hue_turns: float
    saturation: float
    gamma: float
    gains: tuple[float, float, float]
    voice: Voice

    @property
    def name(self) -> str:
        return f"id{self.index:02d}"

    @property
    def matrix(self) -> np.ndarray:
        """(2, 3) float64 photograph -> portrait map."""
        return np.asarray(self.affine, dtype=np.float64).reshape(2, 3)

    def to_portrait(self, points: Sequence[Sequence[float]]) -> np.ndarray:
        """(K, 2) photograph points -> (K, 2) portrait points."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return p @ self.matrix[:, :2].T + self.matrix[:, 2]

    @property
    def scale(self) -> float:
        """Portrait pixels per photograph pixel (geometric mean of the map's singular values)."""
        return float(math.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    def landmarks(self) -> np.ndarray:
        """(3, 2) portrait positions of the two eyes and the mouth, in image order (left eye first)."""
        pts = self.to_portrait([*ASTRONAUT_EYES, ASTRONAUT_MOUTH])
        eyes = pts[:2][np.argsort(pts[:2, 0])]
        return np.concatenate([eyes, pts[2:]])


def make_identities(n: int, seed: int = 0) -> list[Identity]:
    """``n`` identities, deterministic from ``seed``: distinct crops, colours and voices.

    Hues are spread evenly over [-0.09, 0.09] turns and pitches log-uniformly over 95-240 Hz (in a
    seeded order, unrelated to the hues), so any two identities differ in both face and voice.
    """
    if n < 1:
        raise ValueError(f"need at least one identity, got {n}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    hues = np.linspace(-0.09, 0.09, n) if n > 1 else np.zeros(1)
    pitches = np.exp(np.linspace(math.log(95.0), math.log(240.0), n))[rng.permutation(n)]
    out = []
    for i in range(n):
        crop = rng.uniform(215.0, 255.0)                 # photograph pixels across the portrait
        rotation = math.radians(rng.uniform(-7.0, 7.0))
        aspect = rng.uniform(0.9, 1.1)                   # face width / height change
        flip = i % 2 == 1
        shift = rng.uniform(-10.0, 10.0, size=2)
        s = PORTRAIT_SIZE / crop
        lin = np.array([[math.cos(rotation), -math.sin(rotation)], [math.sin(rotation), math.cos(rotation)]])
        lin = lin @ np.diag([s * aspect ** 0.5 * (-1.0 if flip else 1.0), s / aspect ** 0.5])
        centre = np.asarray(ASTRONAUT_FACE_CENTRE) + shift
        offset = np.full(2, PORTRAIT_SIZE / 2) - lin @ centre
        affine = tuple(np.concatenate([lin, offset[:, None]], axis=1).reshape(-1).tolist())
        voice = Voice(f0_hz=float(pitches[i]), formant_scale=float(rng.uniform(0.88, 1.14)),
                      breathiness=float(rng.uniform(0.02, 0.12)))
        out.append(Identity(index=i, affine=affine, hue_turns=float(hues[i] + rng.uniform(-0.01, 0.01)),
                            saturation=float(rng.uniform(0.75, 1.3)), gamma=float(rng.uniform(0.8, 1.25)),
                            gains=tuple(float(g) for g in rng.uniform(0.92, 1.08, size=3)), voice=voice))
    return out


@functools.lru_cache(maxsize=1)
def _photograph() -> np.ndarray:
    """The astronaut photograph, (512, 512, 3) float32 RGB in [0, 1]."""
    from skimage import data

    return data.astronaut().astype(np.float32) / 255.0


def _colour(image: np.ndarray, identity: Identity) -> np.ndarray:
    """Hue rotation, saturation, gamma and channel gains of an identity; float32 RGB in [0, 1]."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)       # float input: H in [0, 360), S and V in [0, 1]
    hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * identity.hue_turns, 360.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * identity.saturation, 0.0, 1.0)
    hsv[..., 2] = np.power(np.clip(hsv[..., 2], 0.0, 1.0), identity.gamma)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * np.asarray(identity.gains, dtype=np.float32)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=64)
def portrait(identity: Identity) -> np.ndarray:
    """The identity's still portrait: (PORTRAIT_SIZE, PORTRAIT_SIZE, 3) float32 RGB in [0, 1]."""
    warped = cv2.warpAffine(_photograph(), identity.matrix, (PORTRAIT_SIZE, PORTRAIT_SIZE), flags=cv2.INTER_AREA,
                            borderMode=cv2.BORDER_REFLECT101)
    return _colour(warped, identity)


# ------------------------------------------------------------------------------------------------
# Speech
# ------------------------------------------------------------------------------------------------


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


def _envelope(u: np.ndarray) -> np.ndarray:
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
        y *= syl.stress * _envelope(u + 1e-9) / (np.sqrt(np.mean(y ** 2)) + 1e-9)
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


def mouth_track(utt: Utterance, n_frames: int, fps: float, substeps: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Jaw opening and lip width of every video frame, driven by an utterance.

    The opening at time t is the largest over syllables of stress x vowel openness x the vowel's
    amplitude shape at t + :data:`MOUTH_LEAD_S`; a frame takes the mean over its display interval
    (as a camera integrates over its exposure).

    Returns:
        opening: (n_frames,) in [0, 1].
        width: (n_frames,) lip width factor around 1.
    """
    t = (np.arange(n_frames)[:, None] + (np.arange(substeps)[None, :] + 0.5) / substeps) / fps   # (N, K)
    opening = np.zeros_like(t)
    width = np.ones_like(t)
    for syl in utt.syllables:
        _, openness, lips = VOWELS[syl.vowel]
        shape = _envelope((t + MOUTH_LEAD_S - syl.vowel_start_s) / syl.vowel_s)
        opening = np.maximum(opening, syl.stress * openness * shape)
        width += (lips - 1.0) * shape
    return opening.mean(axis=1), width.mean(axis=1)


def audio_envelope(wave: np.ndarray, n_frames: int, fps: float, sample_rate: int) -> np.ndarray:
    """RMS of the waveform over each video frame's interval: (n_frames,)."""
    edges = np.round(np.arange(n_frames + 1) / fps * sample_rate).astype(int)
    edges = np.clip(edges, 0, wave.size)
    return np.array([math.sqrt(float(np.mean(wave[a:b].astype(np.float64) ** 2))) if b > a else 0.0
                     for a, b in zip(edges[:-1], edges[1:])])


# ------------------------------------------------------------------------------------------------
# Faces in motion
# ------------------------------------------------------------------------------------------------


class _MouthRig:
    """Opens an identity's mouth in its portrait: a jaw drop (displacement) and a dark cavity."""

    def __init__(self, identity: Identity) -> None:
        m = identity.matrix[:, :2]
        self.centre = identity.to_portrait([ASTRONAUT_MOUTH])[0]
        down = m @ np.array([0.0, 1.0])
        self.down = down / np.linalg.norm(down)
        self.right = np.array([-self.down[1], self.down[0]])
        self.half_width = ASTRONAUT_MOUTH_HALF_WIDTH * identity.scale
        self.max_open = 1.0 * self.half_width
        hw = self.half_width
        # The region that moves: the lower face below the mouth line, fading out at the chin and sides.
        cx, cy = self.centre
        self.box = (max(int(cx - 2.6 * hw), 0), max(int(cy - 0.8 * hw), 0),
                    min(int(math.ceil(cx + 2.6 * hw)), PORTRAIT_SIZE), min(int(math.ceil(cy + 4.0 * hw)), PORTRAIT_SIZE))
        x0, y0, x1, y1 = self.box
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        du, dv = xs - self.centre[0], ys - self.centre[1]
        self.u = (du * self.right[0] + dv * self.right[1]).astype(np.float32)
        self.v = (du * self.down[0] + dv * self.down[1]).astype(np.float32)
        side = np.clip((2.3 * hw - np.abs(self.u)) / (1.1 * hw), 0.0, 1.0)
        below = np.clip((3.7 * hw - self.v) / (1.0 * hw), 0.0, 1.0) * (self.v > 0)
        self.falloff = (side * below).astype(np.float32)
        self.xs, self.ys = xs, ys
        # The cavity lies within the mouth's width and at most max_open below the mouth line.
        self.cavity_box = (max(int(cx - 1.2 * hw) - x0, 0), max(int(cy - 0.3 * hw) - y0, 0),
                           min(int(math.ceil(cx + 1.2 * hw)) - x0, x1 - x0),
                           min(int(math.ceil(cy + self.max_open + 0.5 * hw)) - y0, y1 - y0))

    def apply(self, image: np.ndarray, opening: float, width: float, cavity: np.ndarray | None = None) -> np.ndarray:
        """A copy of the (P, P, 3) portrait with the mouth opened by ``opening`` in [0, 1].

        ``cavity`` is the RGB colour of the open mouth (default: a real mouth's dark interior).
        """
        out = image.copy()
        d = float(opening) * self.max_open
        if d < 0.05:
            return out
        x0, y0, x1, y1 = self.box
        shift = d * self.falloff
        map_x = (self.xs - shift * self.down[0]).astype(np.float32)
        map_y = (self.ys - shift * self.down[1]).astype(np.float32)
        roi = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        a = 0.8 * self.half_width * float(width)
        b = d / 2.0 + 0.3
        c0, r0, c1, r1 = self.cavity_box
        u, v = self.u[r0:r1, c0:c1], self.v[r0:r1, c0:c1]
        r = np.sqrt((u / a) ** 2 + ((v - d / 2.0) / b) ** 2)
        alpha = np.clip((1.0 - r) * min(a, b) / 1.2, 0.0, 1.0)[..., None]
        colour = _CAVITY if cavity is None else cavity
        roi[r0:r1, c0:c1] = roi[r0:r1, c0:c1] * (1.0 - alpha) + colour * alpha
        out[y0:y1, x0:x1] = roi
        return out


_CAVITY = np.array([0.22, 0.07, 0.08], dtype=np.float32)   # colour of the open mouth
# Lip-sync generators paint a generic mouth interior: lighter and pinker than a real one.
_GENERATED_CAVITY = np.array([0.42, 0.2, 0.22], dtype=np.float32)


def _inner_face_mask(identity: Identity, feather_px: float) -> np.ndarray:
    """(P, P, 1) float32 alpha of the swapped region: a feathered ellipse in portrait space."""
    centre, axes = ASTRONAUT_INNER_FACE
    mask = np.zeros((PORTRAIT_SIZE, PORTRAIT_SIZE), dtype=np.float32)
    c = identity.to_portrait([centre])[0]
    m = identity.matrix[:, :2]
    angle = math.degrees(math.atan2(m[1, 0], m[0, 0]))
    sx, sy = np.linalg.norm(m[:, 0]), np.linalg.norm(m[:, 1])
    cv2.ellipse(mask, (int(round(c[0])), int(round(c[1]))), (int(round(axes[0] * sx)), int(round(axes[1] * sy))),
                angle, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), feather_px)[..., None]


class _FaceSwap:
    """Pastes the inner face of ``source`` onto ``target`` (portrait space), as face swapping does.

    The source is aligned with a similarity fitted on the eyes and mouth (so faces of another
    shape leave misaligned features), rendered at 1/:data:`SWAP_RESOLUTION_FACTOR` resolution as
    a generator's output would be, keeps its own colours, and is blended in with a feathered
    ellipse (the seam). Only the region's bounding box is computed.
    """

    def __init__(self, target: Identity, source: Identity) -> None:
        matrix, _ = cv2.estimateAffinePartial2D(source.landmarks().astype(np.float32),
                                                target.landmarks().astype(np.float32))
        mask = _inner_face_mask(target, feather_px=2.0)
        ys, xs = np.nonzero(mask[..., 0] > 1e-3)
        self.box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        x0, y0, x1, y1 = self.box
        self.mask = mask[y0:y1, x0:x1]
        self.matrix = matrix.copy()
        self.matrix[:, 2] -= (x0, y0)            # write straight into the box

    def apply(self, target_image: np.ndarray, source_image: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.box
        pasted = cv2.warpAffine(source_image, self.matrix, (x1 - x0, y1 - y0), borderMode=cv2.BORDER_REFLECT101)
        pasted = _downup(pasted, SWAP_RESOLUTION_FACTOR)
        out = target_image.copy()
        out[y0:y1, x0:x1] = target_image[y0:y1, x0:x1] * (1.0 - self.mask) + pasted * self.mask
        return out


def _lipsync_region(identity: Identity) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """Box (x0, y0, x1, y1) around the lower face and its feathered alpha, for the lip-sync fake."""
    rig = _MouthRig(identity)
    hw = rig.half_width
    cx, cy = rig.centre
    x0, x1 = int(cx - 2.2 * hw), int(cx + 2.2 * hw)
    y0, y1 = int(cy - 1.7 * hw), int(cy + 2.8 * hw)        # from the nose down, as lip-sync models regenerate
    box = (max(x0, 0), max(y0, 0), min(x1, PORTRAIT_SIZE), min(y1, PORTRAIT_SIZE))
    h, w = box[3] - box[1], box[2] - box[0]
    alpha = np.zeros((h, w), dtype=np.float32)
    m = max(2, int(0.1 * min(h, w)))
    alpha[m:-m, m:-m] = 1.0
    return box, cv2.GaussianBlur(alpha, (0, 0), m / 2.0)[..., None]


def _downup(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` rendered at 1/factor resolution: area down-scaling, then bilinear up-scaling."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _soften(image: np.ndarray, box: tuple[int, int, int, int], alpha: np.ndarray, drift: float,
            factor: float = LIPSYNC_RESOLUTION_FACTOR) -> np.ndarray:
    """Re-render ``box`` at 1/factor resolution, washed out by ``drift`` (0-1), blended back with ``alpha``.

    The wash-out (colours pulled towards grey and lightened) is the generator's colour drift.
    """
    x0, y0, x1, y1 = box
    region = image[y0:y1, x0:x1]
    up = _downup(region, factor)
    grey = up.mean(axis=-1, keepdims=True)
    up = np.clip((up + drift * (grey - up)) * (1.0 + 0.3 * drift), 0.0, 1.0)
    out = image.copy()
    out[y0:y1, x0:x1] = region * (1.0 - alpha) + up * alpha
    return out


@dataclass(frozen=True)
class Pose:
    """Smooth head motion of one clip: per-frame translation (px), rotation (degrees) and scale."""

    tx: np.ndarray
    ty: np.ndarray
    angle: np.ndarray
    scale: np.ndarray


def pose_track(n_frames: int, fps: float, rng: np.random.Generator) -> Pose:
    """Sums of two slow sinusoids per degree of freedom, random amplitudes and phases."""
    t = np.arange(n_frames) / fps

    def wave(amplitude: float) -> np.ndarray:
        out = np.zeros(n_frames)
        for _ in range(2):
            f, phase, a = rng.uniform(0.1, 0.6), rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 1.0) * amplitude / 2
            out += a * np.sin(2 * np.pi * f * t + phase)
        return out

    return Pose(tx=wave(4.0), ty=wave(3.0), angle=wave(4.0), scale=1.0 + wave(0.04))


def _frame_matrix(pose: Pose, k: int, frame_size: int) -> np.ndarray:
    """(2, 3) portrait -> frame map of frame k: field of view, then the head pose about the centre."""
    s = frame_size / FIELD_OF_VIEW * pose.scale[k]
    a = math.radians(pose.angle[k])
    lin = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    offset = np.array([frame_size / 2 + pose.tx[k], frame_size / 2 + pose.ty[k]]) - lin @ np.full(2, PORTRAIT_SIZE / 2)
    return np.concatenate([lin, offset[:, None]], axis=1)


# ------------------------------------------------------------------------------------------------
# Clips
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipSpec:
    """Everything that decides one clip (rendering is a pure function of it and the config).

    Attributes:
        name: file stem, unique in a dataset.
        category: one of :data:`CATEGORIES`.
        face: identity whose face (head, hair, background) is seen.
        voice: identity whose voice is heard (an audio donor for RVFA, FVRA-lipsync and FVFA).
        swap: identity whose inner face is pasted in, or None.
        lips_follow_audio: True: the lips are driven by the utterance heard; False: by another one.
        soft_mouth: re-render the lower face at low resolution (lip-sync trace).
        seed: seeds the utterances, the pose and the camera noise.
    """

    name: str
    category: str
    face: int
    voice: int
    swap: int | None
    lips_follow_audio: bool
    soft_mouth: bool
    seed: int

    @property
    def label(self) -> int:
        return int(self.category != "RVRA")

    @property
    def modality_labels(self) -> tuple[int, int]:
        """(audio_label, video_label)."""
        return CATEGORY_LABELS[self.category]


def plan_clips(n_per_category: dict[str, int], config: SyntheticConfig, prefix: str = "clip",
               seed_offset: int = 0) -> list[ClipSpec]:
    """Seeded clip specifications.

    Faces cycle over the identities so every category sees each identity about equally often;
    the other identities of a fake (another voice, a swapped face) are drawn among the rest.

    Args:
        n_per_category: clips per category, e.g. ``{"RVRA": 60, "RVFA": 15, ...}``.
        config: identities and seed.
        prefix: file-name prefix (a dataset's clips are ``<prefix>-<category>-<k>``).
        seed_offset: distinguishes datasets drawn with the same config seed.
    """
    unknown = sorted(set(n_per_category) - set(CATEGORIES))
    if unknown:
        raise ValueError(f"unknown categories {unknown}; expected some of {list(CATEGORIES)}")
    specs = []
    for c_index, category in enumerate(CATEGORIES):
        n = int(n_per_category.get(category, 0))
        if n < 0:
            raise ValueError(f"{category}: negative clip count {n}")
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, 2, seed_offset, c_index]))
        start = int(rng.integers(config.n_identities))
        for k in range(n):
            face = (start + k) % config.n_identities
            others = [i for i in range(config.n_identities) if i != face]
            picks = rng.permutation(others)
            voice = int(picks[0]) if category in ("RVFA", "FVRA-lipsync", "FVFA") else face
            swap = int(picks[1]) if category in ("FVRA-swap", "FVFA") else None
            specs.append(ClipSpec(
                name=f"{prefix}-{category.lower()}-{k:04d}", category=category, face=face, voice=voice, swap=swap,
                lips_follow_audio=category in ("RVRA", "FVRA-swap", "FVRA-lipsync"),
                soft_mouth=category == "FVRA-lipsync",
                seed=int(rng.integers(2**31)),
            ))
    return specs


@dataclass
class RenderedClip:
    """A rendered clip and what drove it.

    Attributes:
        spec: the specification.
        frames: (N, H, W, 3) uint8 RGB.
        audio: (S,) float32 mono.
        opening: (N,) jaw opening shown in each frame.
        mouth_xy: (N, 2) mouth centre in frame pixels.
        heard: the utterance in the audio track.
        lips: the utterance that drove the lips (``heard`` when they follow the audio).
    """

    spec: ClipSpec
    frames: np.ndarray
    audio: np.ndarray
    opening: np.ndarray
    mouth_xy: np.ndarray
    heard: Utterance
    lips: Utterance


def render_clip(spec: ClipSpec, config: SyntheticConfig, identities: Sequence[Identity] | None = None) -> RenderedClip:
    """Render one clip in memory (a pure function of ``spec`` and ``config``)."""
    if spec.category not in CATEGORIES:
        raise ValueError(f"{spec.name}: unknown category {spec.category!r}")
    identities = list(identities) if identities is not None else make_identities(config.n_identities, config.seed)
    for role, i in (("face", spec.face), ("voice", spec.voice), ("swap", spec.swap)):
        if i is not None and not 0 <= i < len(identities):
            raise ValueError(f"{spec.name}: {role} identity {i} out of range [0, {len(identities)})")
    face = identities[spec.face]
    seq = np.random.SeedSequence([spec.seed, 3])
    heard_rng, lips_rng, pose_rng, noise_rng = (np.random.default_rng(s) for s in seq.spawn(4))
    n, d = config.n_frames, config.duration_s
    heard = plan_utterance(identities[spec.voice].voice, d, heard_rng)
    # An unheard utterance is always drawn, so every category consumes the same random streams.
    unheard = plan_utterance(face.voice, d, lips_rng)
    lips = heard if spec.lips_follow_audio else unheard
    audio = synthesize_speech(heard, d, config.sample_rate)
    opening, width = mouth_track(lips, n, config.fps)
    pose = pose_track(n, config.fps, pose_rng)
    noise_sigma = float(noise_rng.uniform(0.5, 4.5)) / 255.0     # per clip: it sets the file size
    flicker = 1.0 + 0.015 * np.sin(2 * np.pi * noise_rng.uniform(0.05, 0.3) * np.arange(n) / config.fps
                                   + noise_rng.uniform(0, 2 * np.pi))

    rig = _MouthRig(face)
    swap = None
    if spec.swap is not None:
        source = identities[spec.swap]
        swap = (_FaceSwap(face, source), _MouthRig(source), portrait(source))
    soft = None
    if spec.soft_mouth:
        # The generator's colour drift in the pasted region, drawn per clip.
        drift_rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 4]))
        soft = (*_lipsync_region(face), float(drift_rng.uniform(0.15, 0.3)))
    still = portrait(face)
    size = config.frame_size
    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    mouth_xy = np.empty((n, 2))
    cavity = _GENERATED_CAVITY if spec.soft_mouth else None
    for k in range(n):
        image = rig.apply(still, opening[k], width[k], cavity)
        if swap is not None:
            blend, source_rig, source_still = swap
            image = blend.apply(image, source_rig.apply(source_still, opening[k], width[k]))
        if soft is not None:
            image = _soften(image, *soft)
        m = _frame_matrix(pose, k, size)
        frame = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        frame = frame * flicker[k] + noise_rng.standard_normal(frame.shape, dtype=np.float32) * noise_sigma
        frames[k] = np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)
        mouth_xy[k] = m[:, :2] @ rig.centre + m[:, 2]
    return RenderedClip(spec=spec, frames=frames, audio=audio, opening=opening, mouth_xy=mouth_xy, heard=heard,
                        lips=lips)


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------

LABEL_COLUMNS = ("path", "label", "audio_label", "video_label", "group", "category", "face", "voice", "swap",
                 "lips")


def _init_worker() -> None:
    # Each worker is one of N parallel processes: OpenCV's own threads would oversubscribe the cores.
    cv2.setNumThreads(1)


def _write_one(spec: ClipSpec, config: SyntheticConfig, path: str) -> str:
    from havic.data.video import write_video

    clip = render_clip(spec, config, _identities(config.n_identities, config.seed))
    write_video(path, clip.frames, config.fps, clip.audio, config.sample_rate, crf=config.crf)
    return path


@functools.lru_cache(maxsize=4)
def _identities(n: int, seed: int) -> tuple[Identity, ...]:
    return tuple(make_identities(n, seed))


def clip_relpath(spec: ClipSpec, layout: str = "category") -> str:
    """Where a clip goes under the dataset root.

    ``category``: ``videos/<category>/<name>.mp4``; ``real_fake``: ``real/<name>.mp4`` or
    ``fake/<category>/<name>.mp4`` (the folder layout of the generic adapter).
    """
    if layout == "category":
        return f"videos/{spec.category}/{spec.name}.mp4"
    if layout == "real_fake":
        return f"real/{spec.name}.mp4" if spec.category == "RVRA" else f"fake/{spec.category}/{spec.name}.mp4"
    raise ValueError(f"unknown layout {layout!r}; expected 'category' or 'real_fake'")


def write_clips(
    root: str | os.PathLike,
    specs: Sequence[ClipSpec],
    config: SyntheticConfig,
    *,
    layout: str = "category",
    labels_csv: str | None = "labels.csv",
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Render and write clips as mp4 (H.264 + AAC) under ``root``, with a labels CSV.

    Clips whose file exists are not rendered again (the output is deterministic).

    Args:
        root: dataset root.
        specs: the clips (:func:`plan_clips`).
        config: format and identities.
        layout: see :func:`clip_relpath`.
        labels_csv: name of the labels file written in ``root`` (columns :data:`LABEL_COLUMNS`,
            readable by the generic adapter), or None for none.
        workers: processes (spawned; each renders whole clips).
        progress: called as ``progress(done, total)`` after each clip.

    Returns:
        The files, in ``specs`` order.
    """
    root = Path(root)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("clip names must be unique")
    paths = [root / clip_relpath(s, layout) for s in specs]
    todo = [(s, p) for s, p in zip(specs, paths) if not p.is_file()]
    for p in {p.parent for _, p in todo}:
        p.mkdir(parents=True, exist_ok=True)
    done = len(specs) - len(todo)
    if progress is not None:
        progress(done, len(specs))
    if workers <= 1 or len(todo) <= 1:
        for s, p in todo:
            _write_one(s, config, str(p))
            done += 1
            if progress is not None:
                progress(done, len(specs))
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker) as pool:
            for _ in pool.map(_write_one, [s for s, _ in todo], [config] * len(todo), [str(p) for _, p in todo]):
                done += 1
                if progress is not None:
                    progress(done, len(specs))
    if labels_csv is not None:
        write_labels(root / labels_csv, specs, [p.relative_to(root).as_posix() for p in paths])
    log.info("%s: %d clips written, %d already there", root, len(todo), len(specs) - len(todo))
    return paths


def write_labels(path: str | os.PathLike, specs: Sequence[ClipSpec], relpaths: Sequence[str]) -> Path:
    """The labels CSV of a synthetic dataset (identity names as ``group``, ``face``, ``voice``, ``swap``)."""
    from havic.utils.io import atomic_write_csv

    rows = []
    for s, rel in zip(specs, relpaths):
        a, v = s.modality_labels
        rows.append([rel, s.label, a, v, f"id{s.face:02d}", s.category, f"id{s.face:02d}", f"id{s.voice:02d}",
                     "" if s.swap is None else f"id{s.swap:02d}", "audio" if s.lips_follow_audio else "other"])
    return atomic_write_csv(path, LABEL_COLUMNS, rows)
