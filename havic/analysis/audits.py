"""Shortcut audits: does video length, or the leading silence, tell real from fake?

* Length audit: the ROC-AUC of the duration alone, and of the number of frames alone, as a score
  for the label. About 0.5 means length carries no label information; far from 0.5 means an LSE
  probe (whose score grows with log T) could use length as a shortcut.
* Leading-silence audit (AVH-Align's trimmed mode): the leading silence is the time of the first
  audio sample with |amplitude| > 5e-4; floor(silence * 25) + 1 video frames at 25 fps, and the
  matching audio ((floor(silence * 25) + 1) * 640 samples at 16 kHz), are cut from the start.
  Scores on the trimmed media are compared with scores on the full media; a large AUC drop means
  the detector used the silence.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from havic.metrics import binary_metrics

__all__ = ["SILENCE_THRESHOLD", "leading_silence_s", "length_audit", "silence_audit", "trim_counts",
           "trim_sequence", "trim_waveform"]

SILENCE_THRESHOLD = 5e-4
VIDEO_FPS = 25.0


def length_audit(labels: Sequence[int], durations_s: Sequence[float] | None = None,
                 num_frames: Sequence[int] | None = None) -> dict[str, Any]:
    """AUC of duration and of frame count against the label (1 = fake).

    Returns:
        ``auc_duration``, ``auc_frames`` (None where not given or undefined), ``n``.
    """
    out: dict[str, Any] = {"auc_duration": None, "auc_frames": None, "n": len(labels)}
    if durations_s is not None:
        out["auc_duration"] = binary_metrics(labels, durations_s)["auc"]
    if num_frames is not None:
        out["auc_frames"] = binary_metrics(labels, num_frames)["auc"]
    return out


def leading_silence_s(waveform: np.ndarray, sample_rate: int, threshold: float = SILENCE_THRESHOLD) -> float:
    """Seconds before the first sample with |amplitude| > threshold (the whole length if none is).

    Args:
        waveform: (N,) or (C, N) samples in [-1, 1]; channels are checked together.
        sample_rate: samples per second.
    """
    x = np.abs(np.atleast_2d(np.asarray(waveform))).max(axis=0)
    above = np.flatnonzero(x > threshold)
    return (int(above[0]) if above.size else x.size) / sample_rate


def trim_counts(silence_s: float, fps: float = VIDEO_FPS, sample_rate: int = 16000) -> tuple[int, int]:
    """(video frames, audio samples) to cut: floor(silence * fps) + 1 frames and their audio."""
    frames = math.floor(silence_s * fps) + 1
    return frames, int(round(frames * sample_rate / fps))


def trim_waveform(waveform: np.ndarray, sample_rate: int, fps: float = VIDEO_FPS,
                  threshold: float = SILENCE_THRESHOLD) -> tuple[np.ndarray, int]:
    """The waveform with its leading silence cut by the trimmed-mode rule, and the video frames to cut with it."""
    frames, samples = trim_counts(leading_silence_s(waveform, sample_rate, threshold), fps, sample_rate)
    return np.asarray(waveform)[..., samples:], frames


def trim_sequence(seq: Any, frames_cut: int, fps: float = VIDEO_FPS) -> Any:
    """A FeatureSequence without the rows that start in the first `frames_cut` video frames.

    A row starting at ``start_s + t / rate_hz`` is kept when that time is at least
    ``frames_cut / fps``. For 25 Hz features this drops exactly `frames_cut` rows. Trimming
    features approximates trimming the media (the encoder's receptive field still saw the
    silence); re-extracting from trimmed media is the exact audit.
    """
    cut_s = frames_cut / fps
    keep = seq.times() >= cut_s - 1e-9
    first = int(keep.nonzero()[0]) if bool(keep.any()) else seq.length
    return replace(seq, values=seq.values[first:], start_s=float(seq.start_s + first / seq.rate_hz))


def silence_audit(labels: Mapping[str, int], full: Mapping[str, float], trimmed: Mapping[str, float]) -> dict[str, Any]:
    """AUC on full and on trimmed media, on the videos scored both ways, and the drop."""
    ids = [k for k in labels if k in full and k in trimmed]
    y = [labels[k] for k in ids]
    auc_full = binary_metrics(y, [full[k] for k in ids])["auc"]
    auc_trim = binary_metrics(y, [trimmed[k] for k in ids])["auc"]
    drop = auc_full - auc_trim if auc_full is not None and auc_trim is not None else None
    return {"auc_full": auc_full, "auc_trimmed": auc_trim, "auc_drop": drop, "n": len(ids)}
