"""Fine-tuning augmentations: per-clip parameters, each operation alone, ranges and fill modes."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from havic.data.audio import FBANK_MEAN, FBANK_STD
from havic.data.transforms import AudioAugment, AudioAugmentParams, VideoAugment, VideoAugmentParams

S = 32
F = 4


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _clip(seed: int = 0, frames: int = F, size: int = S) -> torch.Tensor:
    """(F, 3, S, S) uint8 random clip."""
    return torch.randint(0, 256, (frames, 3, size, size), generator=_gen(seed), dtype=torch.uint8)


def _identity_params(size: int = S, **changes) -> VideoAugmentParams:
    base = VideoAugmentParams(
        flip=False, crop=(0, 0, size, size), downup_size=None, jpeg_quality=None, blur_sigma=None,
        brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0,
    )
    return replace(base, **changes)


# Everything off (colour ranges collapse to "unchanged") so one operation can be switched on alone.
NEUTRAL = dict(
    flip_p=0.0, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), downup_p=0.0, jpeg_p=0.0, blur_p=0.0,
    brightness=(1.0, 1.0), contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=(0.0, 0.0),
)


# ------------------------------------------------------------------------------------------------
# Video
# ------------------------------------------------------------------------------------------------


def test_video_output_range_shape_dtype():
    aug = VideoAugment()
    for seed in range(5):
        out = aug(_clip(seed), _gen(seed))
        assert out.shape == (F, 3, S, S) and out.dtype == torch.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
    out = aug(_clip(0).float() / 255.0, _gen(1))
    assert out.dtype == torch.float32 and out.min() >= 0.0 and out.max() <= 1.0


def test_video_deterministic_with_seeded_generator():
    aug, clip = VideoAugment(), _clip(3)
    a, b = aug(clip, _gen(7)), aug(clip, _gen(7))
    assert torch.equal(a, b)
    outs = [aug(clip, _gen(s)) for s in range(8)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_video_same_parameters_for_every_frame():
    # A clip of identical frames stays a clip of identical frames, whatever was drawn.
    frame = _clip(1, frames=1)
    clip = frame.expand(6, -1, -1, -1).contiguous()
    aug = VideoAugment(flip_p=0.5, downup_p=0.5, jpeg_p=0.5, blur_p=0.5)
    for seed in range(12):
        out = aug(clip, _gen(seed))
        assert torch.allclose(out, out[:1].expand_as(out), atol=1e-6), seed


def test_video_flip_alone_equals_torch_flip():
    clip = _clip(2)
    out = VideoAugment(**{**NEUTRAL, "flip_p": 1.0})(clip, _gen(0))
    assert torch.equal(out, torch.flip(clip.float() / 255.0, dims=[-1]))


def test_video_neutral_is_identity():
    clip = _clip(4)
    out = VideoAugment(**NEUTRAL)(clip, _gen(0))
    assert torch.equal(out, clip.float() / 255.0)


def test_video_disabled_converts_only():
    clip = _clip(5)
    assert torch.equal(VideoAugment(enabled=False)(clip, _gen(0)), clip.float() / 255.0)


def test_crop_boxes_respect_scale_ratio_and_bounds():
    aug = VideoAugment()
    for seed in range(300):
        top, left, h, w = aug._crop_box(224, 224, _gen(seed))
        assert 0 <= top and top + h <= 224 and 0 <= left and left + w <= 224
        # Rounding of h and w moves the area and ratio by at most about one pixel.
        assert 0.8 - 0.01 <= h * w / 224**2 <= 1.0
        assert 0.75 - 0.01 <= w / h <= 1.33 + 0.01


def test_crop_of_a_half_resizes_it_to_the_full_frame():
    clip = torch.zeros(F, 3, S, S, dtype=torch.uint8)
    clip[..., : S // 2] = 50
    clip[..., S // 2 :] = 200
    aug = VideoAugment(**NEUTRAL)
    left = aug.apply(clip, _identity_params(crop=(0, 0, S, S // 2)))
    right = aug.apply(clip, _identity_params(crop=(0, S // 2, S, S // 2)))
    assert torch.allclose(left, torch.full_like(left, 50 / 255), atol=1e-6)
    assert torch.allclose(right, torch.full_like(right, 200 / 255), atol=1e-6)


def test_downup_keeps_flat_and_softens_fine_detail():
    aug = VideoAugment(**NEUTRAL)
    flat = torch.full((F, 3, S, S), 77, dtype=torch.uint8)
    assert torch.allclose(aug.apply(flat, _identity_params(downup_size=(16, 16))), flat.float() / 255, atol=1e-6)
    checker = ((torch.arange(S)[:, None] + torch.arange(S)[None, :]) % 2 * 255).to(torch.uint8)
    clip = checker.expand(F, 3, S, S).contiguous()
    out = aug.apply(clip, _identity_params(downup_size=(16, 16)))
    assert out.std() < 0.5 * (clip.float() / 255).std()


def test_downup_size_is_int_of_scaled_side():
    aug = VideoAugment(**{**NEUTRAL, "downup_p": 1.0})
    for seed in range(50):
        size = aug.sample_params(224, 224, _gen(seed)).downup_size
        assert size is not None and size[0] == size[1] and int(224 * 0.5) <= size[0] <= int(224 * 0.9)


def test_jpeg_changes_detail_and_lower_quality_costs_more():
    aug = VideoAugment(**NEUTRAL)
    # Smooth content plus noise: JPEG keeps the ramp and removes part of the noise.
    ramp = torch.linspace(0, 200, S).expand(S, S)
    noise = torch.randint(0, 40, (F, 3, S, S), generator=_gen(0)).float()
    clip = (ramp + noise).clamp(0, 255).to(torch.uint8)
    ref = clip.float() / 255
    err30 = (aug.apply(clip, _identity_params(jpeg_quality=30)) - ref).abs().mean()
    err95 = (aug.apply(clip, _identity_params(jpeg_quality=95)) - ref).abs().mean()
    assert 0 < err95 < err30 < 0.1


def test_blur_keeps_flat_and_smooths_noise():
    aug = VideoAugment(**NEUTRAL)
    flat = torch.full((F, 3, S, S), 120, dtype=torch.uint8)
    assert torch.allclose(aug.apply(flat, _identity_params(blur_sigma=1.5)), flat.float() / 255, atol=1e-6)
    clip = _clip(6)
    out = aug.apply(clip, _identity_params(blur_sigma=2.0))
    assert out.std() < 0.5 * (clip.float() / 255).std()
    assert torch.allclose(out.mean(), (clip.float() / 255).mean(), atol=0.02)


def _reflect(i: int, n: int) -> int:
    """Index of a reflect-padded axis (the edge pixel is not repeated)."""
    return -i if i < 0 else 2 * (n - 1) - i if i >= n else i


def _blur_by_hand(image: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """(H, W) Gaussian blur as a double loop over pixels and taps, reflect borders."""
    half = kernel // 2
    taps = torch.exp(-torch.arange(-half, half + 1, dtype=torch.float64) ** 2 / (2 * sigma**2))
    taps /= taps.sum()
    h, w = image.shape
    out = torch.zeros(h, w, dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            for a in range(kernel):
                for b in range(kernel):
                    out[y, x] += taps[a] * taps[b] * image[_reflect(y + a - half, h), _reflect(x + b - half, w)]
    return out


def test_blur_kernel_shrinks_for_tiny_frames():
    """On 4 x 4 frames the 13-tap kernel cannot reflect-pad; it shrinks to 2 * 4 - 1 = 7 taps."""
    clip = _clip(0, size=4)
    out = VideoAugment(**NEUTRAL).apply(clip, _identity_params(size=4, blur_sigma=1.0))
    assert out.shape == clip.shape
    image = clip[1, 2].double() / 255
    assert torch.allclose(out[1, 2].double(), _blur_by_hand(image, 7, 1.0), atol=1e-5)
    # A 5-tap kernel (a different blur) must not match: the test can tell kernel sizes apart.
    assert not torch.allclose(out[1, 2].double(), _blur_by_hand(image, 5, 1.0), atol=1e-3)


def test_blur_matches_a_hand_computed_13_tap_kernel():
    clip = _clip(3, size=16)
    out = VideoAugment(**NEUTRAL).apply(clip, _identity_params(size=16, blur_sigma=1.7))
    image = clip[0, 0].double() / 255
    assert torch.allclose(out[0, 0].double(), _blur_by_hand(image, 13, 1.7), atol=1e-5)


def test_colour_ops_hand_computed():
    aug = VideoAugment(**NEUTRAL)
    grey = torch.full((F, 3, S, S), 0.5)
    assert torch.allclose(aug.apply(grey, _identity_params(brightness=1.2)), torch.full_like(grey, 0.6), atol=1e-6)
    # A grey clip has nothing to stretch or saturate.
    # (torchvision's grey weights 0.2989 + 0.587 + 0.114 sum to 0.9999, hence the tolerance)
    assert torch.allclose(aug.apply(grey, _identity_params(contrast=0.8)), grey, atol=1e-4)
    assert torch.allclose(aug.apply(grey, _identity_params(saturation=1.2)), grey, atol=1e-4)
    # Contrast blends with the frame's grey mean: two-level image, mean m, factor c -> m + c (x - m).
    two = torch.zeros(F, 3, S, S)
    two[..., : S // 2] = 0.25
    two[..., S // 2 :] = 0.75
    out = aug.apply(two, _identity_params(contrast=0.8))
    assert torch.allclose(out[..., 0, 0], torch.full((F, 3), 0.5 + 0.8 * (0.25 - 0.5)), atol=1e-4)
    # Hue: pure red shifted by a third of a turn is pure green.
    red = torch.zeros(F, 3, S, S)
    red[:, 0] = 1.0
    green = aug.apply(red, _identity_params(hue=1 / 3))
    assert torch.allclose(green[:, 1], torch.ones(F, S, S), atol=1e-4)
    assert torch.allclose(green[:, [0, 2]], torch.zeros(F, 2, S, S), atol=1e-4)


def test_video_parameter_frequencies_and_ranges():
    aug = VideoAugment()
    draws = [aug.sample_params(64, 64, _gen(seed)) for seed in range(2000)]
    n = len(draws)

    def rate(pred):
        return sum(map(pred, draws)) / n

    tol = 4 * math.sqrt(0.25 / n)
    assert abs(rate(lambda p: p.flip) - 0.5) < tol
    assert abs(rate(lambda p: p.downup_size is not None) - 0.3) < tol
    assert abs(rate(lambda p: p.jpeg_quality is not None) - 0.3) < tol
    assert abs(rate(lambda p: p.blur_sigma is not None) - 0.2) < tol
    qualities = {p.jpeg_quality for p in draws if p.jpeg_quality is not None}
    assert min(qualities) == 30 and max(qualities) == 95 and all(isinstance(q, int) for q in qualities)
    sigmas = [p.blur_sigma for p in draws if p.blur_sigma is not None]
    assert 0.1 <= min(sigmas) and max(sigmas) < 2.0
    ranges = (("brightness", 0.8, 1.2), ("contrast", 0.8, 1.2), ("saturation", 0.8, 1.2), ("hue", -0.1, 0.1))
    for name, lo, hi in ranges:
        values = [getattr(p, name) for p in draws]
        assert lo <= min(values) < lo + 0.01 and hi - 0.01 < max(values) < hi


@pytest.mark.parametrize(
    "changes",
    [{"flip_p": 1.5}, {"crop_scale": (0.9, 0.8)}, {"blur_kernel": 12}, {"hue": (-0.6, 0.1)}, {"jpeg_quality": (0, 95)}],
)
def test_video_rejects_bad_parameters(changes):
    with pytest.raises(ValueError):
        VideoAugment(**changes)


def test_video_rejects_bad_layout():
    with pytest.raises(ValueError, match=r"\(F, 3, H, W\)"):
        VideoAugment()(torch.zeros(F, S, S, 3, dtype=torch.uint8))


# ------------------------------------------------------------------------------------------------
# Audio
# ------------------------------------------------------------------------------------------------


def _fbank(frames: int = 1024, bins: int = 128, seed: int = 0) -> torch.Tensor:
    return torch.randn(frames, bins, generator=_gen(seed))


def test_audio_max_widths_scale_with_input_size():
    aug = AudioAugment()
    assert aug.max_widths(1024, 128) == (100, 20)
    assert aug.max_widths(64, 32) == (6, 5)  # round(100 * 64 / 1024), round(20 * 32 / 128)
    assert aug.max_widths(512, 64) == (50, 10)


@pytest.mark.parametrize("frames,bins", [(1024, 128), (64, 32)])
def test_audio_mask_widths_within_bounds(frames, bins):
    aug = AudioAugment()
    time_max, freq_max = aug.max_widths(frames, bins)
    params = [aug.sample_params(frames, bins, _gen(seed)) for seed in range(1000)]
    assert max(p.freq_width for p in params) == freq_max - 1
    assert max(p.time_width for p in params) == time_max - 1
    assert min(p.freq_width for p in params) == 0 and min(p.time_width for p in params) == 0
    assert all(p.freq_start + p.freq_width <= bins and p.time_start + p.time_width <= frames for p in params)
    noisy = sum(p.noise_amplitude is not None for p in params) / len(params)
    assert abs(noisy - 0.5) < 0.07
    assert all(0 <= p.noise_amplitude < 0.1 for p in params if p.noise_amplitude is not None)


@pytest.mark.parametrize("fill,value", [("fixed", 0.0), ("official", (0.0 - FBANK_MEAN) / FBANK_STD)])
def test_audio_mask_fill_values(fill, value):
    assert value == 0.0 or abs(value - 2.2419) < 1e-3  # 0 before normalisation, about +2.24 after
    x = _fbank()
    params = AudioAugmentParams(freq_start=10, freq_width=7, time_start=300, time_width=50, noise_amplitude=None)
    out = AudioAugment(fill=fill).apply(x, params)
    is_masked = torch.zeros_like(x, dtype=torch.bool)
    is_masked[:, 10:17] = True
    is_masked[300:350, :] = True
    assert torch.allclose(out[is_masked], torch.full_like(out[is_masked], value))
    assert torch.equal(out[~is_masked], x[~is_masked])
    assert not torch.equal(out, x) and x.std() > 0.9  # input untouched


def test_audio_official_fill_is_zero_before_normalisation():
    # Masking the raw fbank with 0 then normalising == masking the normalised fbank with the fill value.
    raw = -7.0 + 2.0 * _fbank(64, 32)
    params = AudioAugmentParams(freq_start=3, freq_width=4, time_start=10, time_width=5, noise_amplitude=None)
    masked_raw = raw.clone()
    masked_raw[:, 3:7] = 0.0
    masked_raw[10:15, :] = 0.0
    expected = (masked_raw - FBANK_MEAN) / FBANK_STD
    out = AudioAugment(fill="official").apply((raw - FBANK_MEAN) / FBANK_STD, params)
    assert torch.allclose(out, expected, atol=1e-5)


def test_audio_noise_official_positive_mean_fixed_zero_mean():
    x = torch.zeros(1024, 128)
    params = AudioAugmentParams(0, 0, 0, 0, noise_amplitude=0.08)
    official = AudioAugment(fill="official").apply(x, params, _gen(0))
    assert official.min() >= 0 and official.max() < 0.08
    assert abs(official.mean().item() - 0.04) < 1e-3  # U[0, 1) * 0.08 has mean 0.04
    fixed = AudioAugment(fill="fixed").apply(x, params, _gen(0))
    assert abs(fixed.mean().item()) < 1e-3
    assert abs(fixed.std().item() - 0.08) < 2e-3


def test_audio_deterministic_and_disabled():
    x = _fbank(64, 32)
    aug = AudioAugment(noise_p=1.0)
    assert torch.equal(aug(x, _gen(3)), aug(x, _gen(3)))
    assert not torch.equal(aug(x, _gen(3)), aug(x, _gen(4)))
    assert AudioAugment(enabled=False)(x, _gen(0)) is x


@pytest.mark.parametrize("changes", [{"fill": "mean"}, {"noise_p": -0.1}, {"freq_mask": -1}, {"norm_std": 0.0}])
def test_audio_rejects_bad_parameters(changes):
    with pytest.raises(ValueError):
        AudioAugment(**changes)
