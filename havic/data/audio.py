"""Log-mel filterbank features of the audio track, as the reference pipeline computes them.

Pipeline for one clip (docs/official-differences.md#audio-input): subtract the waveform mean,
Kaldi-compatible fbank (128 mel bins, 25 ms Hanning frames every 10 ms, no dither, no energy,
HTK-compatible layout), bring the frame count to `n_frames` (linear time stretch in the reference
code, or AudioMAE-style pad/crop), normalise with fixed dataset constants. Layout is (time frames,
mel bins).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "AudioFeatures",
    "fit_length",
    "log_mel_fbank",
    "normalise_fbank",
    "window_fbanks",
]

LengthPolicy = Literal["stretch", "pad_crop"]

# The audio front end's defaults, in one place: the configuration schema (havic.config), the
# preprocessing settings and the transforms below all take them from here.
SAMPLE_RATE = 16000
NUM_MEL_BINS = 128
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
# Normalisation constants of the reference training and inference scripts
# (docs/official-differences.md#audio-input).
FBANK_MEAN = -6.996
FBANK_STD = 3.1205


def _as_waveform(waveform: Tensor | np.ndarray) -> Tensor:
    wave = torch.as_tensor(np.asarray(waveform) if not isinstance(waveform, Tensor) else waveform)
    if wave.ndim != 1:
        raise ValueError(f"waveform must be mono (S,), got shape {tuple(wave.shape)}")
    if not wave.is_floating_point():
        raise ValueError(f"waveform must hold float samples in [-1, 1], got {wave.dtype}")
    # float64 stays float64 (for exactness checks); everything else is computed in float32.
    return wave if wave.dtype == torch.float64 else wave.to(torch.float32)


def log_mel_fbank(
    waveform: Tensor | np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    num_mel_bins: int = NUM_MEL_BINS,
    frame_length_ms: float = FRAME_LENGTH_MS,
    frame_shift_ms: float = FRAME_SHIFT_MS,
) -> Tensor:
    """Kaldi-compatible log-mel filterbank of a mono waveform after removing its mean.

    Args:
        waveform: (S,) float samples in [-1, 1]; float64 is kept, other floats become float32.
        sample_rate: Hz.
        num_mel_bins: mel bands.
        frame_length_ms: analysis window in ms (400 samples at 16 kHz).
        frame_shift_ms: hop in ms (160 samples at 16 kHz).

    Returns:
        (T, num_mel_bins) log mel energies (float32 unless the input is float64),
        T = 1 + (S - window) // hop (Kaldi snip_edges).
        With 128 bins at 16 kHz mel bin 3 is empty and holds the constant log(float32 eps).

    Raises:
        ValueError: waveform not 1-D or shorter than one analysis window.
    """
    from torchaudio.compliance import kaldi  # heavy import, only where features are computed

    wave = _as_waveform(waveform)
    window = round(frame_length_ms * sample_rate / 1000)
    if wave.numel() < window:
        raise ValueError(f"waveform of {wave.numel()} samples is shorter than one {window}-sample frame")
    wave = wave - wave.mean()
    return kaldi.fbank(
        wave.unsqueeze(0),
        htk_compat=True,
        sample_frequency=float(sample_rate),
        use_energy=False,
        window_type="hanning",
        num_mel_bins=num_mel_bins,
        dither=0.0,
        frame_length=float(frame_length_ms),
        frame_shift=float(frame_shift_ms),
    )


def fit_length(fbank: Tensor, n_frames: int, policy: LengthPolicy = "stretch") -> Tensor:
    """Bring a (T, F) feature map to exactly `n_frames` time frames.

    Args:
        fbank: (T, F), T >= 1.
        n_frames: target length.
        policy: "stretch" resamples along time by linear interpolation with
            align_corners=False, per mel bin (reference code); "pad_crop" zero-pads at the end or
            keeps the first `n_frames` frames (AudioMAE).

    Returns:
        (n_frames, F), same dtype.
    """
    if fbank.ndim != 2 or fbank.shape[0] < 1:
        raise ValueError(f"fbank must be (T, F) with T >= 1, got {tuple(fbank.shape)}")
    t = fbank.shape[0]
    if policy == "stretch":
        if t == n_frames:
            return fbank
        # interpolate works on (N, C, L): mel bins are channels, time is the length.
        return F.interpolate(fbank.T.unsqueeze(0), size=n_frames, mode="linear", align_corners=False)[0].T
    if policy == "pad_crop":
        if t >= n_frames:
            return fbank[:n_frames]
        return F.pad(fbank, (0, 0, 0, n_frames - t))
    raise ValueError(f"unknown length policy {policy!r}; expected 'stretch' or 'pad_crop'")


def normalise_fbank(fbank: Tensor, mean: float = FBANK_MEAN, std: float = FBANK_STD) -> Tensor:
    """(fbank - mean) / std with the dataset constants."""
    return (fbank - mean) / std


@dataclass(frozen=True)
class AudioFeatures:
    """Parameters of the audio input and the transform of one clip's waveform into it.

    Attributes:
        sample_rate: Hz of the waveform.
        num_mel_bins: mel bands F.
        frame_length_ms: analysis window.
        frame_shift_ms: hop.
        n_frames: model input length in frames (1024 in the reference model).
        length_policy: "stretch" (reference code) or "pad_crop" (AudioMAE).
        norm_mean: normalisation mean.
        norm_std: normalisation standard deviation.
    """

    sample_rate: int = SAMPLE_RATE
    num_mel_bins: int = NUM_MEL_BINS
    frame_length_ms: float = FRAME_LENGTH_MS
    frame_shift_ms: float = FRAME_SHIFT_MS
    n_frames: int = 1024
    length_policy: LengthPolicy = "stretch"
    norm_mean: float = FBANK_MEAN
    norm_std: float = FBANK_STD

    @classmethod
    def from_config(cls, cfg: Any) -> "AudioFeatures":
        """The audio input transform of a full configuration (``data.audio`` and ``model.audio``)."""
        a = cfg.data.audio
        return cls(
            sample_rate=int(a.sample_rate), num_mel_bins=int(cfg.model.audio.num_mel_bins),
            frame_length_ms=float(a.frame_length_ms), frame_shift_ms=float(a.frame_shift_ms),
            n_frames=int(cfg.model.audio.num_frames), length_policy=a.length_policy,
            norm_mean=float(a.norm_mean), norm_std=float(a.norm_std),
        )

    @property
    def window_samples(self) -> int:
        return round(self.frame_length_ms * self.sample_rate / 1000)

    @property
    def shift_samples(self) -> int:
        return round(self.frame_shift_ms * self.sample_rate / 1000)

    def frames_for(self, seconds: float) -> int:
        """Fbank frames of a `seconds` long waveform: 1 + (S - window) // hop, 0 if S < window."""
        n_samples = round(seconds * self.sample_rate)
        if n_samples < self.window_samples:
            return 0
        return 1 + (n_samples - self.window_samples) // self.shift_samples

    def fbank(self, waveform: Tensor | np.ndarray) -> Tensor:
        """(S,) waveform -> (T, num_mel_bins) log-mel, before length fitting and normalisation."""
        return log_mel_fbank(
            waveform, self.sample_rate, self.num_mel_bins, self.frame_length_ms, self.frame_shift_ms
        )

    def finish(self, fbank: Tensor) -> Tensor:
        """(T, F) log-mel -> (n_frames, F) model input: length fitted, then normalised."""
        return normalise_fbank(fit_length(fbank, self.n_frames, self.length_policy), self.norm_mean, self.norm_std)

    def __call__(self, waveform: Tensor | np.ndarray) -> Tensor:
        """(S,) waveform of one clip -> (n_frames, num_mel_bins) normalised model input."""
        return self.finish(self.fbank(waveform))


def window_fbanks(
    waveform: Tensor | np.ndarray,
    starts_s: Sequence[float] | np.ndarray,
    clip_seconds: float,
    features: AudioFeatures,
    *,
    reuse_whole: bool = False,
) -> Tensor:
    """Model inputs of several windows cut from one waveform (sliding-window inference).

    By default each window is cut from the waveform and transformed on its own, exactly as the
    reference inference does (docs/official-differences.md#sliding-window-inference):
    `features(waveform[start : start + clip])`.

    With `reuse_whole=True` the fbank of the whole waveform is computed once and sliced at each
    window's first frame. That is mathematically the same: with snip_edges every frame sees only
    its own samples, and Kaldi subtracts each frame's own mean (remove_dc_offset) before
    pre-emphasis and windowing, so a constant offset such as the waveform mean (of the whole
    waveform here, of one window in the reference) cancels. In float64 the two agree to ~1e-12;
    in float32 they differ by rounding, up to ~1e-3 in log energy for near-silent mel bins (about
    as far as each is from the float64 result), so the default stays per window; the saving
    (about 1.5 ms of fbank per window) is rarely worth the deviation. Windows whose start is not
    on the frame grid (a multiple of the hop) are always computed from their own slice.

    Args:
        waveform: (S,) whole-video waveform at `features.sample_rate`.
        starts_s: (W,) window start times in seconds.
        clip_seconds: window length in seconds.
        features: the feature parameters.
        reuse_whole: slice one whole-waveform fbank instead of one fbank per window.

    Returns:
        (W, n_frames, num_mel_bins) normalised model inputs.

    Raises:
        ValueError: a window starts outside the waveform or leaves less than one frame.
    """
    wave = _as_waveform(waveform)
    sr, hop = features.sample_rate, features.shift_samples
    clip_samples = round(clip_seconds * sr)
    clip_frames = features.frames_for(clip_seconds)
    whole: Tensor | None = None
    out = []
    for s in np.asarray(starts_s, dtype=np.float64).reshape(-1):
        start = round(s * sr)
        if start < 0 or wave.numel() - start < features.window_samples:
            raise ValueError(
                f"window at {s:.3f} s leaves {wave.numel() - start} of {wave.numel()} samples; "
                f"need at least {features.window_samples}"
            )
        if reuse_whole and start % hop == 0 and abs(s * sr - start) < 1e-6 * sr:
            if whole is None:
                whole = features.fbank(wave)
            fb = whole[start // hop : start // hop + clip_frames]
        else:
            fb = features.fbank(wave[start : start + clip_samples])
        out.append(features.finish(fb))
    if not out:
        return torch.empty(0, features.n_frames, features.num_mel_bins)
    return torch.stack(out)
