"""Sliding windows: the window plan, the frames they share, and their audio inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from havic.data.audio import AudioFeatures, window_fbanks
from havic.inference import WindowAudio, audio_features, frame_union, plan_windows, window_frame_times

import tiny_detector as td


@pytest.mark.parametrize("duration, max_seconds, expected", [
    (3.2, None, [0.0]),
    (3.3, None, [0.0, 0.1]),                                   # the tail window ends at the end
    (10.0, None, [round(0.4 * k, 6) for k in range(18)]),      # (10 - 3.2) / 0.4 + 1 = 18, no tail
    (10.3, None, [round(0.4 * k, 6) for k in range(18)] + [7.1]),
    (2.0, None, [0.0]),                                        # shorter than a window: padded
    (10.0, 5.0, [0.0, 0.4, 0.8, 1.2, 1.6, 1.8]),
    (10.0, 2.0, [0.0]),
    (6.4, 100.0, [round(0.4 * k, 6) for k in range(9)]),
])
def test_plan_windows_by_hand(duration, max_seconds, expected):
    starts = plan_windows(duration, 3.2, 0.4, max_seconds)
    assert starts == pytest.approx(expected, abs=1e-9)
    end = min(duration, max_seconds or duration)
    if end >= 3.2:   # covered: first starts at 0, last ends at the end, no gap bigger than the hop
        assert starts[0] == 0 and starts[-1] + 3.2 == pytest.approx(end)
        assert np.diff(starts).max(initial=0) <= 0.4 + 1e-9


@pytest.mark.parametrize("args, match", [((0.0,), "duration"), ((float("nan"),), "duration"),
                                         ((5.0, 0.0), "positive"), ((5.0, 3.2, 0.4, 0.0), "max_seconds")])
def test_plan_windows_rejects(args, match):
    with pytest.raises(ValueError, match=match):
        plan_windows(*args)


def test_windows_share_frames_of_the_training_grid():
    # 16 frames at 5 fps every 0.4 s: windows 0, 0.4, 0.8 share the 0.2 s grid 0 .. 3.8
    starts = [0.0, 0.4, 0.8]
    times, ids = frame_union(window_frame_times(starts, 10.0, 16, 5.0, padded=False))
    np.testing.assert_allclose(times, 0.2 * np.arange(20))
    assert [i.tolist() for i in ids] == [list(range(2 * w, 2 * w + 16)) for w in range(3)]
    # a 1.3 s video padded to one window repeats its 7 frames in order
    (padded,) = window_frame_times([0.0], 1.3, 16, 5.0, padded=True)
    np.testing.assert_allclose(padded, 0.2 * (np.arange(16) % 7))


def test_window_audio_equals_window_fbanks():
    cfg = td.tiny_config()
    feats = AudioFeatures.from_config(cfg)
    assert audio_features(cfg) == feats                          # the older name, still importable
    wave = td.speech_like(6.0, phase=0.3)
    starts = [0.0, 0.4, 1.2, 2.8, 2.7123]                       # the last is off the 10 ms hop grid
    ours = WindowAudio(wave, feats, 3.2).inputs(starts)
    ref = window_fbanks(wave, starts, 3.2, feats, reuse_whole=True)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    per_window = window_fbanks(wave, starts, 3.2, feats)         # the reference's own slices
    torch.testing.assert_close(ours, per_window, rtol=0, atol=2e-3)
    with pytest.raises(ValueError, match="needs samples"):
        WindowAudio(wave, feats, 3.2).inputs([3.0])
