"""The demo's faces: identities made from scikit-image's astronaut, mouths that follow the vowels.

**Identities.** Each identity is the photograph that ships with scikit-image
(``skimage.data.astronaut()``) seen through its own affine map (crop, scale, rotation, aspect
ratio, mirror image) and colour transform (hue, saturation, gamma, channel gains), rendered into a
square *portrait*, and has its own **voice** (:class:`havic.demo.speech.Voice`: fundamental
frequency, vocal-tract length as a formant scale, breathiness).

**Talking.** The mouth follows the vowels that drive it: the jaw drops (the lower face is
displaced along the face's vertical axis) and a dark mouth cavity opens in proportion to the
vowel's amplitude envelope times the vowel's openness (/a/ widest, /i/ and /u/ least), and the
cavity's width follows the vowel's lip spreading (/i/ wide, /u/ rounded). The mouth leads the
sound by 50 ms, as in real speech. The head moves smoothly (translation, rotation, scale).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from havic.demo.speech import VOWELS, Utterance, Voice, syllable_envelope

__all__ = [
    "ASTRONAUT_INNER_FACE",
    "FIELD_OF_VIEW",
    "MOUTH_LEAD_S",
    "PORTRAIT_SIZE",
    "Identity",
    "MouthRig",
    "Pose",
    "frame_matrix",
    "make_identities",
    "mouth_track",
    "portrait",
    "pose_track",
]

MOUTH_LEAD_S = 0.05          # the jaw starts moving this long before the vowel is heard

# Landmarks of the face in skimage.data.astronaut() (512 x 512), in pixels (x, y).
ASTRONAUT_EYES = ((204.0, 101.0), (246.0, 103.0))
ASTRONAUT_MOUTH = (223.0, 147.0)          # where the upper teeth meet the lower lip
ASTRONAUT_MOUTH_HALF_WIDTH = 21.0
ASTRONAUT_FACE_CENTRE = (225.0, 125.0)
ASTRONAUT_INNER_FACE = ((225.0, 127.0), (37.0, 41.0))   # centre and semi-axes of the swapped region

PORTRAIT_SIZE = 224          # identities are rendered at this size, then posed into the frame
FIELD_OF_VIEW = 184          # portrait pixels that span the frame width


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
        shape = syllable_envelope((t + MOUTH_LEAD_S - syl.vowel_start_s) / syl.vowel_s)
        opening = np.maximum(opening, syl.stress * openness * shape)
        width += (lips - 1.0) * shape
    return opening.mean(axis=1), width.mean(axis=1)


class MouthRig:
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


def frame_matrix(pose: Pose, k: int, frame_size: int) -> np.ndarray:
    """(2, 3) portrait -> frame map of frame k: field of view, then the head pose about the centre."""
    s = frame_size / FIELD_OF_VIEW * pose.scale[k]
    a = math.radians(pose.angle[k])
    lin = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    offset = np.array([frame_size / 2 + pose.tx[k], frame_size / 2 + pose.ty[k]]) - lin @ np.full(2, PORTRAIT_SIZE / 2)
    return np.concatenate([lin, offset[:, None]], axis=1)
