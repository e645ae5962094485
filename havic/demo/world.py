"""The demo's world: synthetic talking-face videos, real and fake, written as ordinary mp4 files with audio.

Everything is generated in code and deterministic from a seed; nothing is downloaded. The faces
(:mod:`havic.demo.faces`) are identities made from the photograph that ships with scikit-image,
each with its own voice; they speak synthesised utterances (:mod:`havic.demo.speech`) with lips
that follow the vowels, and fakes are made by the manipulations of :mod:`havic.demo.fakes`. This
module plans clips, renders them and writes the videos and their labels.

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
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from havic.demo.faces import Identity, MouthRig, frame_matrix, make_identities, mouth_track, portrait, pose_track
from havic.demo.fakes import GENERATED_CAVITY, FaceSwap, lipsync_region, soften
from havic.demo.speech import Utterance, plan_utterance, synthesize_speech

__all__ = [
    "CATEGORIES",
    "CATEGORY_LABELS",
    "FAKE_CATEGORIES",
    "LABEL_COLUMNS",
    "ClipSpec",
    "RenderedClip",
    "SyntheticConfig",
    "clip_relpath",
    "plan_clips",
    "render_clip",
    "write_clips",
    "write_labels",
]

log = logging.getLogger(__name__)

CATEGORIES = ("RVRA", "RVFA", "FVRA-swap", "FVRA-lipsync", "FVFA")
CATEGORY_LABELS: dict[str, tuple[int, int]] = {  # (audio_label, video_label)
    "RVRA": (0, 0), "RVFA": (1, 0), "FVRA-swap": (0, 1), "FVRA-lipsync": (0, 1), "FVFA": (1, 1),
}
FAKE_CATEGORIES = CATEGORIES[1:]


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

    rig = MouthRig(face)
    swap = None
    if spec.swap is not None:
        source = identities[spec.swap]
        swap = (FaceSwap(face, source), MouthRig(source), portrait(source))
    soft = None
    if spec.soft_mouth:
        # The generator's colour drift in the pasted region, drawn per clip.
        drift_rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 4]))
        soft = (*lipsync_region(face), float(drift_rng.uniform(0.15, 0.3)))
    still = portrait(face)
    size = config.frame_size
    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    mouth_xy = np.empty((n, 2))
    cavity = GENERATED_CAVITY if spec.soft_mouth else None
    for k in range(n):
        image = rig.apply(still, opening[k], width[k], cavity)
        if swap is not None:
            blend, source_rig, source_still = swap
            image = blend.apply(image, source_rig.apply(source_still, opening[k], width[k]))
        if soft is not None:
            image = soften(image, *soft)
        m = frame_matrix(pose, k, size)
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
