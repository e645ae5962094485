"""Log-mel features: reference parameters, length fitting, normalisation, window slicing."""
from __future__ import annotations

import math
import wave

import numpy as np
import pytest
import torch
from torchaudio.compliance import kaldi

from havic.data.audio import AudioFeatures, fit_length, log_mel_fbank, normalise_fbank, window_fbanks
from havic.data.video import DecodeStats, read_audio

SR = 16000
SPEECH = ("speech_librivox_0870.wav", "speech_librivox_0920.wav")


def _reference_fbank(wave_: torch.Tensor) -> torch.Tensor:
    """The reference dataset code, spelled out: mean removal, then kaldi.fbank with the reference arguments.

    See docs/official-differences.md#audio-input.
    """
    w = wave_.unsqueeze(0) - wave_.mean()
    return kaldi.fbank(
        w, htk_compat=True, sample_frequency=SR, use_energy=False, window_type="hanning",
        num_mel_bins=128, dither=0.0, frame_shift=10,
    )


@pytest.fixture
def noise() -> torch.Tensor:
    # Speech-like level plus a DC offset, so the mean subtraction has something to do.
    return 0.1 * torch.randn(4 * SR) + 0.05


def test_fbank_shape_for_3_2_seconds(noise):
    fb = log_mel_fbank(noise[: 51200])
    assert fb.shape == (318, 128) and fb.dtype == torch.float32
    assert AudioFeatures().frames_for(3.2) == 1 + (51200 - 400) // 160 == 318


def test_fbank_equals_reference_call(noise):
    assert torch.equal(log_mel_fbank(noise), _reference_fbank(noise))
    # numpy input goes through the same path
    assert torch.equal(log_mel_fbank(noise.numpy()), _reference_fbank(noise))


def test_mel_bin_3_is_constant_log_eps(noise):
    # 128 triangular filters on a 512-point FFT at 16 kHz: filter 3 covers no FFT bin, so its
    # energy is 0 and torchaudio clamps it to float32 eps: log(eps) = -15.94 in every frame (Kaldi
    # itself would reject such a filter bank).
    fb = log_mel_fbank(noise)
    constant_bins = [i for i in range(128) if torch.all(fb[:, i] == fb[0, i])]
    assert constant_bins == [3]
    assert fb[0, 3].item() == pytest.approx(math.log(torch.finfo(torch.float32).eps), abs=1e-5)


def test_frames_for_matches_fbank_lengths():
    feats = AudioFeatures()
    for n in (400, 401, 559, 560, 16000, 51200):
        assert feats.frames_for(n / SR) == log_mel_fbank(torch.randn(n)).shape[0] == 1 + (n - 400) // 160
    assert feats.frames_for(399 / SR) == 0
    with pytest.raises(ValueError, match="shorter than one 400-sample frame"):
        log_mel_fbank(torch.randn(399))


def test_fbank_rejects_bad_input():
    with pytest.raises(ValueError, match="mono"):
        log_mel_fbank(torch.randn(2, 1000))
    with pytest.raises(ValueError, match="float samples"):
        log_mel_fbank(np.zeros(1000, dtype=np.int16))


def test_stretch_matches_hand_computation():
    # Linear interpolation with align_corners=False: output i samples source position
    # (i + 0.5) * T / n - 0.5, clamped to [0, T - 1].
    ramp = torch.tensor([0.0, 1.0, 2.0, 3.0]).unsqueeze(1).repeat(1, 2)
    ramp[:, 1] *= 10
    out = fit_length(ramp, 8, "stretch")
    expected = torch.tensor([0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0])
    assert out.shape == (8, 2)
    torch.testing.assert_close(out[:, 0], expected)
    torch.testing.assert_close(out[:, 1], 10 * expected)
    # shrinking: 4 -> 2 samples positions 0.5 and 2.5
    torch.testing.assert_close(fit_length(ramp, 2, "stretch")[:, 0], torch.tensor([0.5, 2.5]))
    assert fit_length(ramp, 4, "stretch") is ramp


def test_stretch_318_to_1024_keeps_ends_and_mean():
    fb = torch.arange(318, dtype=torch.float32).unsqueeze(1)
    out = fit_length(fb, 1024)
    assert out.shape == (1024, 1)
    assert out[0].item() == 0.0 and out[-1].item() == 317.0
    assert torch.all(out[1:] >= out[:-1])


def test_pad_crop():
    fb = torch.arange(12, dtype=torch.float32).reshape(6, 2) + 1
    padded = fit_length(fb, 9, "pad_crop")
    assert padded.shape == (9, 2)
    assert torch.equal(padded[:6], fb) and torch.all(padded[6:] == 0)
    assert torch.equal(fit_length(fb, 4, "pad_crop"), fb[:4])
    with pytest.raises(ValueError, match="unknown length policy"):
        fit_length(fb, 4, "squeeze")


def test_normalisation_constants():
    x = torch.tensor([-6.996, -6.996 + 3.1205, 0.0])
    torch.testing.assert_close(normalise_fbank(x), torch.tensor([0.0, 1.0, 6.996 / 3.1205]))
    torch.testing.assert_close(normalise_fbank(x, mean=1.0, std=2.0), (x - 1.0) / 2.0)


def test_audio_features_call_is_the_whole_pipeline(noise):
    clip = noise[:51200]
    feats = AudioFeatures()
    stretched = torch.nn.functional.interpolate(
        _reference_fbank(clip).T[None], size=1024, mode="linear", align_corners=False
    )[0].T
    expected = (stretched + 6.996) / 3.1205
    out = feats(clip)
    assert out.shape == (1024, 128)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    out_pc = AudioFeatures(length_policy="pad_crop")(clip)
    torch.testing.assert_close(out_pc[:318], (_reference_fbank(clip) + 6.996) / 3.1205, rtol=0, atol=1e-6)
    torch.testing.assert_close(out_pc[318:], torch.full((706, 128), 6.996 / 3.1205), rtol=0, atol=1e-6)


def _windows_reference(wave_: torch.Tensor, starts, clip_seconds, feats) -> torch.Tensor:
    n = round(clip_seconds * SR)
    return torch.stack([feats(wave_[round(s * SR): round(s * SR) + n]) for s in starts])


def test_window_fbanks_default_is_per_window(noise):
    feats = AudioFeatures()
    starts = [0.0, 0.4, 0.8, 0.55]  # 0.55 s: off the 10 ms grid is fine too
    out = window_fbanks(noise, starts, 3.2, feats)
    assert out.shape == (4, 1024, 128)
    assert torch.equal(out, _windows_reference(noise, starts, 3.2, feats))


def test_window_slicing_is_exact_in_float64(noise):
    # The claim behind reuse_whole: frame-wise DC removal cancels any constant offset, so the fbank
    # of the whole waveform sliced at a window's first frame equals the window's own fbank. In
    # float64 this holds to float64 rounding, ~1e-12 (the last window runs past the end of the
    # waveform and gets fewer frames, also the same on both paths).
    feats = AudioFeatures()
    w64 = noise.double()
    starts = [0.0, 0.4, 0.8, 1.2]
    shared = window_fbanks(w64, starts, 3.2, feats, reuse_whole=True)
    assert shared.dtype == torch.float64
    torch.testing.assert_close(shared, _windows_reference(w64, starts, 3.2, feats), rtol=0, atol=1e-10)
    raw_whole = log_mel_fbank(w64)
    for s in starts:
        own = log_mel_fbank(w64[round(s * SR): round(s * SR) + 51200])
        assert own.shape[0] == (318 if s < 0.8 + 1e-9 else 278)
        torch.testing.assert_close(raw_whole[round(s * 100): round(s * 100) + own.shape[0]], own, rtol=0, atol=1e-10)
    # Without the frame-wise DC removal the offset would matter: the claim is not vacuous.
    shifted = kaldi.fbank((w64 + 0.3).unsqueeze(0), remove_dc_offset=False, dither=0.0)
    assert (shifted - kaldi.fbank(w64.unsqueeze(0), remove_dc_offset=False, dither=0.0)).abs().max() > 1e-3


@pytest.mark.parametrize("name", SPEECH)
def test_window_slicing_float32_differs_only_by_rounding(assets_dir, name):
    # In float32 the sliced and the per-window fbanks differ by rounding only: no more than either
    # is from the float64 result, at most ~1e-3 (near-silent bins), and not at all for most values.
    w = torch.from_numpy(read_audio(assets_dir / "media" / name))
    starts = np.arange(0.0, len(w) / SR - 3.2, 0.4)
    whole32 = log_mel_fbank(w)
    worst = 0.0
    for s in starts:
        a, n = round(s * SR), round(s * 100)
        own32, own64 = log_mel_fbank(w[a: a + 51200]), log_mel_fbank(w.double()[a: a + 51200])
        diff = (whole32[n: n + 318] - own32).abs()
        err_own = (own32.double() - own64).abs().max().item()
        assert diff.max().item() <= 2 * max(err_own, 1e-6) + 1e-6
        assert diff.median().item() <= 1e-6
        worst = max(worst, diff.max().item())
    assert worst < 2e-3
    feats = AudioFeatures()
    shared = window_fbanks(w, starts, 3.2, feats, reuse_whole=True)
    torch.testing.assert_close(shared, window_fbanks(w, starts, 3.2, feats), rtol=0, atol=2e-3)


def test_window_fbanks_rejects_out_of_range(noise):
    with pytest.raises(ValueError, match="window at"):
        window_fbanks(noise, [3.99], 3.2, AudioFeatures())
    assert window_fbanks(noise, [], 3.2, AudioFeatures()).shape == (0, 1024, 128)


@pytest.mark.parametrize("name", SPEECH)
def test_speech_wav_reads_exactly(assets_dir, name):
    path = assets_dir / "media" / name
    with wave.open(str(path), "rb") as f:
        assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (SR, 1, 2)
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    stats = DecodeStats()
    w = read_audio(path, stats=stats)
    assert w.dtype == np.float32 and w.shape == pcm.shape
    assert 5.0 < len(w) / SR < 7.5
    # s16 -> float is an exact division by 32768 and 16 kHz in and out means no resampling.
    np.testing.assert_array_equal(w, pcm.astype(np.float32) / 32768)
    assert stats.n_corrupt_packets == 0
    fb = AudioFeatures()(w[: 51200])
    assert fb.shape == (1024, 128) and torch.isfinite(fb).all()
