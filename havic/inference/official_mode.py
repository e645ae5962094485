"""The official preset of whole-video scoring (``infer.preset=official``): the official script's windows.

The default preset, ``corrected``, scores videos the way :mod:`havic.inference` describes, which
fixes what the official evaluation script does differently
(docs/official-differences.md#sliding-window-inference). The ``official`` preset rebuilds the window
inputs of that script instead, so that the released weights reproduce its published numbers:

* faces cropped with margin 1.0 (:data:`OFFICIAL_MARGIN`; the official training crops used 1.3);
* frames: decoded frame int(t · fps) for t = 0, 1/``data.fps``, ... below (frames / fps) s, each
  frame once (:func:`official_frame_indices`); of those, the first ``infer.max_seconds`` ·
  ``data.fps`` (10 s by default: 50 frames), less the last few so that the windows tile them;
  windows of ``model.video.num_frames`` frames every round(``infer.hop_s`` · ``data.fps``) frames,
  no extra window ending at the end of the video (:func:`plan_official`);
* audio: the whole track as ``ffmpeg -ac 1 -ar 16000`` writes it into a 16-bit wav file (every
  decoded sample, the AAC end padding included; :func:`wav16` rounding), apportioned to the frames
  used in proportion to the time points they came from, and cut into windows of
  int(used · 16 / n) samples every eighth of that (:func:`official_audio_spans`): about 3.2 s,
  scaled by the wav's duration over the time points' span, and drifting from their frames by tens
  of milliseconds. Each window gets the fbank of its own samples (:class:`OfficialWindowAudio`).

Videos are still never dropped. The official script silently skips a video in which a frame has no
face, or that has fewer frames than one window. Here the first kind is scored, each faceless frame
borrowing the nearest detection (as in the default preset), and flagged ``official_skips_no_face``;
the second is scored as the default preset scores a short video (frames repeated, audio looped,
flag ``padded``) and flagged ``official_skips_short``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from havic.data.audio import AudioFeatures

__all__ = [
    "OFFICIAL_MARGIN",
    "OFFICIAL_MAX_SECONDS",
    "OfficialPlan",
    "OfficialWindowAudio",
    "official_audio_spans",
    "official_frame_indices",
    "official_stride",
    "pcm16",
    "plan_official",
    "wav16",
]

# Crop margin of the official evaluation script (its training crops used 1.3).
OFFICIAL_MARGIN = 1.0
# The official script scores the first 10 s of a video (its --max_time default).
OFFICIAL_MAX_SECONDS = 10.0


def official_stride(hop_s: float, fps: float) -> int:
    """Frames between window starts: ``hop_s`` at ``fps`` frames per second, at least one (0.4 s at 5 fps: 2)."""
    return max(1, round(hop_s * fps))


def official_frame_indices(n_video_frames: int, video_fps: float, step_s: float) -> tuple[np.ndarray, int]:
    """The decoded frames the official script samples, and how many time points it drew them from.

    Time points t = 0, step, 2 step, ... below n_video_frames / video_fps (``numpy.arange``, so
    exactly its float rounding); frame index int(t · video_fps), clipped to the last frame; each
    frame once. Below 1 / step frames per second several time points fall on one frame: fewer
    frames than time points.

    Args:
        n_video_frames: frames in the video (> 0).
        video_fps: its average frame rate.
        step_s: seconds between time points (0.2 officially).

    Returns:
        (K,) ascending int64 frame indices, and the number of time points before de-duplication
        (it apportions the audio: :func:`official_audio_spans`).
    """
    if n_video_frames < 1 or not (video_fps > 0 and math.isfinite(video_fps)) or step_s <= 0:
        raise ValueError(f"need frames >= 1, a positive frame rate and step, got {n_video_frames}, {video_fps}, "
                         f"{step_s}")
    times = np.arange(0, n_video_frames / video_fps, step_s)
    ids = np.unique(np.clip((times * video_fps).astype(np.int64), 0, n_video_frames - 1))
    return ids, int(times.size)


@dataclass(frozen=True)
class OfficialPlan:
    """The frames and windows the official script scores in one video.

    Attributes:
        frame_times: (N,) seconds of the frames used, frame index / video fps (N: window frames +
            a multiple of `stride`).
        window_frames: (W, F) int64 indices into `frame_times`: window k holds frames k · stride ..
            k · stride + F − 1.
        n_timepoints: time points the frames were drawn from (:func:`official_frame_indices`).
        stride: frames between window starts.
        truncated: the video had more frames than the cap, and only the first were used.
    """

    frame_times: np.ndarray
    window_frames: np.ndarray
    n_timepoints: int
    stride: int
    truncated: bool

    @property
    def starts(self) -> list[float]:
        """(W,) the time of each window's first frame, in seconds."""
        return [float(t) for t in self.frame_times[self.window_frames[:, 0]]]


def plan_official(n_video_frames: int, video_fps: float, *, step_s: float, num_frames: int, stride: int,
                  max_frames: int) -> OfficialPlan | None:
    """The official script's frames and windows of a video (docs/official-differences.md#sliding-window-inference).

    The frames of :func:`official_frame_indices`, at most the first `max_frames`, less the last
    (n − num_frames) mod stride; windows of `num_frames` frames every `stride` frames from the
    first, none added at the end.

    Args:
        n_video_frames: frames in the video; video_fps: its average frame rate.
        step_s: seconds between sampled time points (1 / ``data.fps``: 0.2).
        num_frames: frames per window (16); stride: frames between windows (2);
        max_frames: frames used at most (the first 10 s: 50).

    Returns:
        The plan, or None when fewer than `num_frames` frames are sampled (the official script skips
        such a video).
    """
    if num_frames < 1 or stride < 1 or max_frames < 1:
        raise ValueError(f"num_frames, stride and max_frames must be >= 1, got {num_frames}, {stride}, {max_frames}")
    ids, n_timepoints = official_frame_indices(n_video_frames, video_fps, step_s)
    n = min(ids.size, max_frames)
    if n < num_frames:
        return None
    n -= (n - num_frames) % stride
    first = np.arange(0, n - num_frames + 1, stride)
    return OfficialPlan(frame_times=ids[:n] / video_fps, window_frames=first[:, None] + np.arange(num_frames)[None],
                        n_timepoints=n_timepoints, stride=stride, truncated=ids.size > max_frames)


def official_audio_spans(n_frames: int, n_timepoints: int, n_samples: int, num_frames: int,
                         stride: int) -> list[tuple[int, int]]:
    """[start, end) samples of each window's audio, with the official script's arithmetic.

    The track's first int(n_frames / n_timepoints · n_samples) samples go with the frames used;
    a window gets int(used · num_frames / n_frames) of them (the window's share of the frames) and
    windows start every int(stride / num_frames · length) samples. With a wav longer than the video
    (AAC padding), windows are longer than their frames' span and drift later. Windows never pass
    ``used``: (W − 1) · hop + length <= length · n_frames / num_frames <= used, so the official
    script's shift-back never applies.

    Args:
        n_frames: frames used (num_frames + a multiple of stride).
        n_timepoints: time points they were drawn from (:func:`official_frame_indices`).
        n_samples: samples in the whole track.
        num_frames, stride: frames per window and between windows.

    Returns:
        One (start, end) per window, in order.
    """
    if n_frames < num_frames or (n_frames - num_frames) % stride or n_timepoints < n_frames:
        raise ValueError(f"{n_frames} frames from {n_timepoints} time points do not tile windows of {num_frames} "
                         f"frames every {stride}")
    n_windows = (n_frames - num_frames) // stride + 1
    # The official expressions, operation for operation (true division, then truncation).
    used = int((n_frames / n_timepoints) * n_samples)
    length = int((used * num_frames) / (num_frames + stride * (n_windows - 1)))
    hop = int((stride / num_frames) * length)
    return [(k * hop, k * hop + length) for k in range(n_windows)]


def pcm16(wave: np.ndarray) -> np.ndarray:
    """(S,) float samples -> (S,) int16, as ffmpeg stores them in a 16-bit wav.

    swresample's conversion: round to nearest (ties to even) of x · 32768, clipped to the int16
    range (so 1.0 becomes 32767).
    """
    x = np.asarray(wave, dtype=np.float32) * np.float32(32768)
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def wav16(wave: np.ndarray) -> np.ndarray:
    """(S,) float samples through a 16-bit wav file and back, as the official script reads its wav.

    :func:`pcm16`, then / 32768 (``torchaudio.load`` of 16-bit PCM): (S,) float32.
    """
    return pcm16(wave).astype(np.float32) / np.float32(32768)


class OfficialWindowAudio:
    """Model audio inputs of the official windows of one video: each window's fbank of its own samples.

    Args:
        waveform: (S,) float32 mono, the whole track after :func:`wav16`.
        features: the feature parameters (each slice: minus its mean, fbank, stretch, normalise).
        starts: (W,) the windows' start times (:attr:`OfficialPlan.starts`), the keys of `inputs`.
        spans: (W,) their samples (:func:`official_audio_spans`).
    """

    def __init__(self, waveform: np.ndarray, features: AudioFeatures, starts: Sequence[float],
                 spans: Sequence[tuple[int, int]]) -> None:
        if len(starts) != len(spans):
            raise ValueError(f"{len(starts)} window starts but {len(spans)} audio spans")
        if spans and spans[-1][1] > len(waveform):
            raise ValueError(f"the last window needs samples up to {spans[-1][1]}, the waveform has {len(waveform)}")
        self.wave = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
        self.features = features
        self.spans = dict(zip(starts, spans))

    def inputs(self, starts_s: Sequence[float]) -> Tensor:
        """(W,) window starts -> (W, n_frames, num_mel_bins) normalised model inputs."""
        return torch.stack([self.features(self.wave[a:b]) for a, b in (self.spans[s] for s in starts_s)])
