"""The windows of whole-video scoring: where they start, which frames they see, and their audio inputs.

A window is ``data.clip_seconds`` long, like a training clip; its frames sit on the training grid
(window start + k / ``data.fps``), so windows that overlap share frames and every shared frame is
decoded and cropped once (:func:`frame_union`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from havic.data.audio import AudioFeatures
from havic.data.video import sample_times

__all__ = ["TIME_EPS", "WindowAudio", "audio_features", "frame_union", "plan_windows", "window_frame_times"]

# Durations and window starts are floats from rationals; a microsecond absorbs their rounding.
TIME_EPS = 1e-6

# The audio input transform of a configuration; the name predates AudioFeatures.from_config.
audio_features = AudioFeatures.from_config


def plan_windows(
    duration_s: float, window_s: float = 3.2, hop_s: float = 0.4, max_seconds: float | None = None
) -> list[float]:
    """Start times of the windows that cover a video.

    Windows start at 0, hop_s, 2 hop_s, ... while they fit; when that grid leaves a tail (the last
    window ends more than a microsecond before the end), a final window starting at
    ``end - window_s`` is added so the last seconds are scored too. A video shorter than one
    window gets the single start 0 (the scorer pads it, see :mod:`havic.inference`).

    Args:
        duration_s: video duration in seconds (> 0).
        window_s: window length.
        hop_s: distance between window starts.
        max_seconds: score only the first `max_seconds` seconds (None: all).

    Returns:
        Sorted window starts in seconds, rounded to microseconds.
    """
    if window_s <= 0 or hop_s <= 0:
        raise ValueError(f"window_s and hop_s must be positive, got {window_s}, {hop_s}")
    if not math.isfinite(duration_s) or duration_s <= 0:
        raise ValueError(f"duration must be positive and finite, got {duration_s}")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    end = min(duration_s, max_seconds) if max_seconds is not None else duration_s
    if end < window_s - TIME_EPS:
        return [0.0]
    n = math.floor((end - window_s) / hop_s + TIME_EPS) + 1
    starts = [round(k * hop_s, 6) for k in range(n)]
    if end - (starts[-1] + window_s) > TIME_EPS:
        starts.append(round(end - window_s, 6))
    return starts


def window_frame_times(starts: Sequence[float], end: float, num_frames: int, fps: float,
                       padded: bool) -> list[np.ndarray]:
    """(F,) frame times of each window: ``start + k / fps`` for k < `num_frames`.

    A `padded` video (shorter than one window, a single start) has only the frames of its ``end``
    seconds at ``fps``: the window repeats them in order (times ``t_(k mod n)``).
    """
    k = np.arange(num_frames)
    if padded:
        have = sample_times(end, fps)
        have = have if have.size else np.zeros(1)
        return [have[k % have.size]]
    return [s + k / fps for s in starts]


def frame_union(per_window: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct frame times of all windows, and each window's frames as indices into them.

    Times are compared in whole microseconds, so a frame shared by overlapping windows is one frame.

    Returns:
        (T,) ascending times in seconds, and per window its (F,) indices into them.
    """
    keys = [np.round(t * 1e6).astype(np.int64) for t in per_window]
    union = np.unique(np.concatenate(keys))
    return union / 1e6, [np.searchsorted(union, k) for k in keys]


class WindowAudio:
    """Model audio inputs of the windows of one video, from one fbank of the whole track.

    The whole waveform's fbank is computed once (lazily) and sliced at each window's first frame,
    as :func:`havic.data.audio.window_fbanks` does with ``reuse_whole=True`` (identical values;
    it differs from a per-window fbank by float32 rounding only, see there). A window whose start
    is not on the fbank hop grid is computed from its own samples.

    Args:
        waveform: (S,) float32 mono, long enough for every window (pad it first).
        features: the feature parameters.
        window_s: window length in seconds.
    """

    def __init__(self, waveform: np.ndarray, features: AudioFeatures, window_s: float) -> None:
        self.wave = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
        self.features = features
        self.window_samples = round(window_s * features.sample_rate)
        self.window_frames = features.frames_for(window_s)
        self._whole: Tensor | None = None

    def inputs(self, starts_s: Sequence[float]) -> Tensor:
        """(W,) starts -> (W, n_frames, num_mel_bins) normalised model inputs."""
        f, hop = self.features, self.features.shift_samples
        out = []
        for s in starts_s:
            start = round(s * f.sample_rate)
            if start < 0 or start + self.window_samples > self.wave.numel():
                raise ValueError(f"window at {s:.3f} s needs samples up to {start + self.window_samples}, "
                                 f"the waveform has {self.wave.numel()}")
            if start % hop == 0 and abs(s * f.sample_rate - start) < 1e-6 * f.sample_rate:
                if self._whole is None:
                    self._whole = f.fbank(self.wave)
                fb = self._whole[start // hop: start // hop + self.window_frames]
            else:
                fb = f.fbank(self.wave[start: start + self.window_samples])
            out.append(f.finish(fb))
        return torch.stack(out)
