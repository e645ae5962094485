"""Fine-tuning augmentations of one clip: video frames and the audio fbank.

See docs/official-differences.md#augmentations.

Both augmentations draw one set of random parameters per clip from a ``torch.Generator`` and
apply it to the whole clip, so every frame of a clip sees the same flip, crop, JPEG quality, blur
and colour change. Sampling and applying are separate steps (``sample_params`` / ``apply``), which
lets tests and callers fix the parameters; ``__call__`` does both.

JPEG re-encoding goes through OpenCV, frame by frame (torchvision's image codecs are deprecated).

Layouts:

* video: ``(F, 3, H, W)``, frames first and channels first (the torchvision video layout), uint8
  in [0, 255] or float in [0, 1] on input; float32 in [0, 1] on output. The dataset converts the
  cached ``(F, H, W, 3)`` uint8 frames to this layout before, and to the model's ``(3, F, H, W)``
  after.
* audio: ``(T, M)`` time frames x mel bins, already length-fitted and normalised.

The video operations run in float (one rounding to uint8 only for the JPEG step), whereas the
reference applies PIL operations that round to uint8 after each step; the differences are below
one grey level per step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from havic.data.audio import FBANK_MEAN, FBANK_STD

__all__ = [
    "AudioAugment",
    "AudioAugmentParams",
    "REFERENCE_AUDIO_FRAMES",
    "REFERENCE_MEL_BINS",
    "VideoAugment",
    "VideoAugmentParams",
]

# The reference mask widths (freqm 20, timem 100) are given for a 1024 x 128 fbank image.
REFERENCE_AUDIO_FRAMES = 1024
REFERENCE_MEL_BINS = 128

FillMode = Literal["fixed", "official"]


def _uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    """One float drawn uniformly from [low, high)."""
    return low + (high - low) * torch.rand((), generator=generator).item()


def _bernoulli(generator: torch.Generator | None, p: float) -> bool:
    # Always consumes one draw, so later parameters do not depend on whether this step fired.
    return torch.rand((), generator=generator).item() < p


def _randint(generator: torch.Generator | None, low: int, high: int) -> int:
    """One integer drawn uniformly from [low, high)."""
    return int(torch.randint(low, high, (), generator=generator).item())


def _check_probability(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}={p}: a probability must lie in [0, 1]")


def _check_range(name: str, value: tuple[float, float], low: float = -math.inf, high: float = math.inf) -> None:
    if len(value) != 2 or not low <= value[0] <= value[1] <= high:
        raise ValueError(f"{name}={tuple(value)}: expected (low, high) with {low} <= low <= high <= {high}")


@dataclass(frozen=True)
class VideoAugmentParams:
    """The random parameters of one clip's video augmentation.

    Attributes:
        flip: mirror left-right.
        crop: (top, left, height, width) of the RandomResizedCrop box, in input pixels.
        downup_size: (height, width) of the intermediate down-scale, or None to skip the step.
        jpeg_quality: JPEG quality 1..100, or None to skip the step.
        blur_sigma: Gaussian blur sigma, or None to skip the step.
        brightness: brightness factor (1 = unchanged).
        contrast: contrast factor (1 = unchanged).
        saturation: saturation factor (1 = unchanged).
        hue: hue shift in turns, [-0.5, 0.5] (0 = unchanged).
    """

    flip: bool
    crop: tuple[int, int, int, int]
    downup_size: tuple[int, int] | None
    jpeg_quality: int | None
    blur_sigma: float | None
    brightness: float
    contrast: float
    saturation: float
    hue: float


@dataclass
class VideoAugment:
    """Clip-consistent video augmentation of the reference fine-tuning, in order.

    See docs/official-differences.md#augmentations.

    1. horizontal flip with probability ``flip_p``;
    2. RandomResizedCrop box (area fraction ``crop_scale``, aspect ratio ``crop_ratio``, the
       torchvision sampling rule), cropped and resized back to the clip size (bilinear);
    3. down-up resize with probability ``downup_p``: to ``int(size * s)``, s ~ U(``downup_scale``),
       then back to the clip size;
    4. JPEG re-encode with probability ``jpeg_p``, integer quality ~ U[``jpeg_quality``];
    5. Gaussian blur with probability ``blur_p``, kernel ``blur_kernel``, sigma ~ U(``blur_sigma``);
    6. brightness, contrast and saturation factors and hue shift drawn from their ranges and
       always applied, in that order.

    Attributes:
        enabled: False turns the augmentation into a plain conversion to float in [0, 1].
    """

    enabled: bool = True
    flip_p: float = 0.5
    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.33)
    downup_p: float = 0.3
    downup_scale: tuple[float, float] = (0.5, 0.9)
    jpeg_p: float = 0.3
    jpeg_quality: tuple[int, int] = (30, 95)
    blur_p: float = 0.2
    blur_kernel: int = 13
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    brightness: tuple[float, float] = (0.8, 1.2)
    contrast: tuple[float, float] = (0.8, 1.2)
    saturation: tuple[float, float] = (0.8, 1.2)
    hue: tuple[float, float] = (-0.1, 0.1)

    def __post_init__(self) -> None:
        for name in ("flip_p", "downup_p", "jpeg_p", "blur_p"):
            _check_probability(name, getattr(self, name))
        _check_range("crop_scale", self.crop_scale, 0.0, 1.0)
        if self.crop_scale[1] <= 0:
            raise ValueError(f"crop_scale={tuple(self.crop_scale)}: the upper bound must be > 0")
        _check_range("crop_ratio", self.crop_ratio, 0.0)
        if self.crop_ratio[0] <= 0:
            raise ValueError(f"crop_ratio={tuple(self.crop_ratio)}: ratios must be > 0")
        _check_range("downup_scale", self.downup_scale, 0.0, 1.0)
        _check_range("jpeg_quality", self.jpeg_quality, 1, 100)
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel={self.blur_kernel}: must be a positive odd number")
        _check_range("blur_sigma", self.blur_sigma, 0.0)
        for name in ("brightness", "contrast", "saturation"):
            _check_range(name, getattr(self, name), 0.0)
        _check_range("hue", self.hue, -0.5, 0.5)

    def _crop_box(self, height: int, width: int, generator: torch.Generator | None) -> tuple[int, int, int, int]:
        """RandomResizedCrop box (top, left, h, w): torchvision's rule, drawn from `generator`."""
        area = height * width
        log_lo, log_hi = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        for _ in range(10):
            target = area * _uniform(generator, *self.crop_scale)
            aspect = math.exp(_uniform(generator, log_lo, log_hi))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                return _randint(generator, 0, height - h + 1), _randint(generator, 0, width - w + 1), h, w
        # Fallback after 10 rejections (torchvision): the largest centred box within the ratios.
        in_ratio = width / height
        if in_ratio < self.crop_ratio[0]:
            w, h = width, round(width / self.crop_ratio[0])
        elif in_ratio > self.crop_ratio[1]:
            h, w = height, round(height * self.crop_ratio[1])
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def sample_params(self, height: int, width: int, generator: torch.Generator | None = None) -> VideoAugmentParams:
        """Draw the parameters of one clip of `height` x `width` frames."""
        flip = _bernoulli(generator, self.flip_p)
        crop = self._crop_box(height, width, generator)
        downup = _bernoulli(generator, self.downup_p)
        s = _uniform(generator, *self.downup_scale)
        jpeg = _bernoulli(generator, self.jpeg_p)
        quality = _randint(generator, self.jpeg_quality[0], self.jpeg_quality[1] + 1)
        blur = _bernoulli(generator, self.blur_p)
        sigma = _uniform(generator, *self.blur_sigma)
        return VideoAugmentParams(
            flip=flip,
            crop=crop,
            downup_size=(max(1, int(height * s)), max(1, int(width * s))) if downup else None,
            jpeg_quality=quality if jpeg else None,
            blur_sigma=sigma if blur else None,
            brightness=_uniform(generator, *self.brightness),
            contrast=_uniform(generator, *self.contrast),
            saturation=_uniform(generator, *self.saturation),
            hue=_uniform(generator, *self.hue),
        )

    def apply(self, frames: Tensor, params: VideoAugmentParams) -> Tensor:
        """Apply fixed parameters to every frame of a clip.

        Args:
            frames: (F, 3, H, W) uint8 in [0, 255] or float in [0, 1].
            params: from :meth:`sample_params` (or built by hand).

        Returns:
            (F, 3, H, W) float32 in [0, 1].
        """
        x = _to_float(frames)
        size = [x.shape[-2], x.shape[-1]]
        if params.flip:
            x = TF.horizontal_flip(x)
        top, left, h, w = params.crop
        if (top, left, h, w) != (0, 0, size[0], size[1]):
            x = TF.resized_crop(x, top, left, h, w, size, antialias=True).clamp_(0.0, 1.0)
        if params.downup_size is not None:
            x = TF.resize(x, list(params.downup_size), antialias=True)
            x = TF.resize(x, size, antialias=True).clamp_(0.0, 1.0)
        if params.jpeg_quality is not None:
            x = _jpeg(x, params.jpeg_quality)
        if params.blur_sigma is not None:
            # Reflect padding needs kernel // 2 < side: shrink the kernel for tiny frames only.
            k = min(self.blur_kernel, 2 * min(size) - 1)
            k -= 1 - k % 2
            x = TF.gaussian_blur(x, [k, k], [params.blur_sigma, params.blur_sigma])
        x = TF.adjust_brightness(x, params.brightness)
        x = TF.adjust_contrast(x, params.contrast)
        x = TF.adjust_saturation(x, params.saturation)
        if params.hue != 0.0:
            x = TF.adjust_hue(x, params.hue)
        return x.clamp_(0.0, 1.0)

    def __call__(self, frames: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment one clip: (F, 3, H, W) uint8 or float -> (F, 3, H, W) float32 in [0, 1]."""
        _check_video(frames)
        if not self.enabled:
            return _to_float(frames)
        return self.apply(frames, self.sample_params(frames.shape[-2], frames.shape[-1], generator))


def _check_video(frames: Tensor) -> None:
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"video clip must be (F, 3, H, W), got shape {tuple(frames.shape)}")


def _jpeg(frames: Tensor, quality: int) -> Tensor:
    """JPEG-encode and decode every frame: (F, 3, H, W) float [0, 1] -> same, through uint8."""
    as_bytes = frames.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = np.empty_like(as_bytes)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    for i, rgb in enumerate(as_bytes):
        # OpenCV expects BGR: the channel order decides which channel the colour conversion sees as red.
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), params)
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for a frame of shape {rgb.shape}")
        out[i] = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)


def _to_float(frames: Tensor) -> Tensor:
    """uint8 [0, 255] or float [0, 1] -> float32 [0, 1] (a copy, safe to modify in place)."""
    if frames.dtype == torch.uint8:
        return frames.to(torch.float32).div_(255.0)
    if not frames.is_floating_point():
        raise ValueError(f"video clip must be uint8 or float, got {frames.dtype}")
    return frames.to(torch.float32, copy=True)


@dataclass(frozen=True)
class AudioAugmentParams:
    """The random parameters of one clip's audio augmentation.

    Attributes:
        freq_start: first masked mel bin.
        freq_width: masked mel bins (0 = no mask).
        time_start: first masked frame.
        time_width: masked frames (0 = no mask).
        noise_amplitude: the scalar ``u * noise_scale`` of the additive noise, or None for none.
    """

    freq_start: int
    freq_width: int
    time_start: int
    time_width: int
    noise_amplitude: float | None


@dataclass
class AudioAugment:
    """One frequency mask, one time mask, then additive noise with probability ``noise_p``.

    The maximum mask widths ``freq_mask`` / ``time_mask`` are those of the reference for a
    1024-frame x 128-bin input; they scale with the actual input size (e.g. 5 bins and 6 frames
    for a 64 x 32 input). Widths are uniform in [0, max), start positions uniform over the places
    where the mask fits.

    Fill modes:

    * ``"fixed"`` (default): the masks fill with 0, the mean of the normalised input, and the
      noise is zero-mean Gaussian, ``N(0, 1) * u * noise_scale`` with one u ~ U[0, 1) per clip.
    * ``"official"`` (docs/official-differences.md#augmentations): the reference masks the fbank
      with 0 *before* normalisation, so the band holds ``(0 - norm_mean) / norm_std`` (about +2.24)
      afterwards, and adds positive-mean noise ``U[0, 1) * u * noise_scale`` after normalisation.

    Attributes:
        enabled: False returns the input unchanged.
        norm_mean: the fbank normalisation mean (for the ``official`` fill value only).
        norm_std: the fbank normalisation std (for the ``official`` fill value only).
    """

    enabled: bool = True
    freq_mask: int = 20
    time_mask: int = 100
    noise_p: float = 0.5
    noise_scale: float = 0.1
    fill: FillMode = "fixed"
    norm_mean: float = FBANK_MEAN
    norm_std: float = FBANK_STD

    def __post_init__(self) -> None:
        if self.fill not in ("fixed", "official"):
            raise ValueError(f"fill={self.fill!r}: expected 'fixed' or 'official'")
        if self.freq_mask < 0 or self.time_mask < 0:
            raise ValueError(f"mask widths must be >= 0, got freq_mask={self.freq_mask}, time_mask={self.time_mask}")
        _check_probability("noise_p", self.noise_p)
        if self.noise_scale < 0:
            raise ValueError(f"noise_scale={self.noise_scale}: must be >= 0")
        if self.norm_std <= 0:
            raise ValueError(f"norm_std={self.norm_std}: must be > 0")

    @property
    def fill_value(self) -> float:
        """The value masked bins hold in the normalised fbank."""
        return (0.0 - self.norm_mean) / self.norm_std if self.fill == "official" else 0.0

    def max_widths(self, num_frames: int, num_mel_bins: int) -> tuple[int, int]:
        """(time, freq) exclusive upper bounds of the mask widths for a (num_frames, num_mel_bins) input."""
        time_max = round(self.time_mask * num_frames / REFERENCE_AUDIO_FRAMES)
        freq_max = round(self.freq_mask * num_mel_bins / REFERENCE_MEL_BINS)
        return min(time_max, num_frames), min(freq_max, num_mel_bins)

    def sample_params(
        self, num_frames: int, num_mel_bins: int, generator: torch.Generator | None = None
    ) -> AudioAugmentParams:
        """Draw the parameters of one (num_frames, num_mel_bins) fbank."""
        time_max, freq_max = self.max_widths(num_frames, num_mel_bins)
        freq_width = _randint(generator, 0, max(freq_max, 1))
        freq_start = _randint(generator, 0, num_mel_bins - freq_width + 1)
        time_width = _randint(generator, 0, max(time_max, 1))
        time_start = _randint(generator, 0, num_frames - time_width + 1)
        noise = _bernoulli(generator, self.noise_p)
        u = torch.rand((), generator=generator).item()
        return AudioAugmentParams(
            freq_start, freq_width, time_start, time_width, u * self.noise_scale if noise else None
        )

    def apply(self, fbank: Tensor, params: AudioAugmentParams, generator: torch.Generator | None = None) -> Tensor:
        """Mask, then add noise drawn from `generator`.

        Args:
            fbank: (T, M) normalised log-mel.
            params: from :meth:`sample_params`.
            generator: source of the noise values.

        Returns:
            (T, M) float tensor (a new tensor; the input is not modified).
        """
        x = fbank.clone()
        fill = self.fill_value
        x[:, params.freq_start : params.freq_start + params.freq_width] = fill
        x[params.time_start : params.time_start + params.time_width, :] = fill
        if params.noise_amplitude is not None:
            if self.fill == "official":
                noise = torch.rand(x.shape, generator=generator, dtype=x.dtype)
            else:
                noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            x += noise * params.noise_amplitude
        return x

    def __call__(self, fbank: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment one clip's (T, M) normalised fbank."""
        if fbank.ndim != 2 or not fbank.is_floating_point():
            raise ValueError(f"fbank must be a float (T, M) tensor, got {fbank.dtype} {tuple(fbank.shape)}")
        if not self.enabled:
            return fbank
        return self.apply(fbank, self.sample_params(fbank.shape[0], fbank.shape[1], generator), generator)
