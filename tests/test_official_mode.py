"""The official scoring preset: frames, windows and audio of the official evaluation script, exactly.

The reference inputs are built here from the official rules written out by hand
(docs/official-differences.md#sliding-window-inference): frames picked by index, crops with margin
1.0, the wav ffmpeg writes (libswresample's own 16-bit mono output), the official window arithmetic,
one fbank per window. They must equal what the scorer feeds the model with ``infer.preset=official``.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from havic.config import ConfigError
from havic.data.face import FaceCropper
from havic.inference import VideoScorer, build_cropper
from havic.inference.official_mode import (
    OfficialWindowAudio,
    official_audio_spans,
    official_frame_indices,
    official_stride,
    pcm16,
    plan_official,
    wav16,
)
from havic.predictions import VideoPrediction, read_predictions, write_predictions_csv

import tiny_detector as td

NTSC = Fraction(30000, 1001)
SIZE = 64
BOX = (10.7, 12.3, 50.2, 49.9)       # fractional corners: the official rule truncates them


class BoxDetector:
    """One fixed face box in every frame that is not black (a black frame has no face)."""

    def detect(self, frames: np.ndarray) -> list[np.ndarray]:
        return [np.array([[*BOX, 0.99]], dtype=np.float32) if f.mean() > 5 else np.zeros((0, 5), np.float32)
                for f in frames]


class Recorder(torch.nn.Module):
    """Keeps the inputs of every batch; logit = mean pixel of the window."""

    def __init__(self) -> None:
        super().__init__()
        self.video_head = torch.nn.Identity()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.videos: list[torch.Tensor] = []
        self.audios: list[torch.Tensor] = []

    def forward(self, video, audio):
        from havic.models import DetectorOutput

        self.videos.append(video.clone())
        if audio is not None:
            self.audios.append(audio.clone())
        logit = self.scale * video.mean(dim=(1, 2, 3, 4))
        return DetectorOutput(logit=logit, audio_logit=None, video_logit=logit, has_audio=audio is not None)


def official_config(*overrides: str):
    """The tiny model with the official window shape: 16 frames at 5 fps per 3.2 s window."""
    return td.tiny_config("model.video.num_frames=16", "data.fps=5.0", "infer.preset=official", *overrides)


def official_scorer(cfg, **kwargs) -> tuple[VideoScorer, Recorder]:
    model = Recorder()
    cropper = FaceCropper(BoxDetector(), size=cfg.model.video.image_size, margin=1.0, max_gap_s=1.0)
    return VideoScorer(model, cfg, cropper, batch_size=64, **kwargs), model


def write_stereo_video(path: Path, n_frames: int, fps: Fraction | float, sample_rate: int = 44100,
                       black_first: bool = False) -> Path:
    """Noise frames (each one different) with AAC stereo audio: a tone on the left, a warbling one on the right."""
    rng = np.random.default_rng(0)
    frames = rng.integers(30, 225, (n_frames, SIZE, SIZE, 3), dtype=np.uint8)
    if black_first:
        frames[0] = 0
    n = round(n_frames / fps * sample_rate)
    t = np.arange(n) / sample_rate
    left = 0.3 * np.sin(2 * np.pi * 440 * t)
    right = 0.2 * np.sin(2 * np.pi * 1000 * t + 3 * np.sin(2 * np.pi * 2 * t))
    audio = np.stack([left, right]).astype(np.float32)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        vs.width, vs.height, vs.pix_fmt = SIZE, SIZE, "yuv420p"
        vs.options = {"crf": "18"}
        astream = c.add_stream("aac", rate=sample_rate, layout="stereo")
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = i, 1 / Fraction(fps)
            c.mux(vs.encode(vf))
        c.mux(vs.encode(None))
        for start in range(0, n, 8192):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[:, start:start + 8192]), format="fltp",
                                            layout="stereo")
            af.sample_rate, af.pts, af.time_base = sample_rate, start, Fraction(1, sample_rate)
            c.mux(astream.encode(af))
        c.mux(astream.encode(None))
    return path


# ------------------------------------------------------------------------------------- the official rules by hand


def reference_inputs(path: Path, cfg) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """The official script's window inputs of `path`: (video (W, 3, 16, S, S), audio (W, T, M), starts)."""
    from torchaudio.compliance import kaldi

    size, mel, n_fbank = cfg.model.video.image_size, cfg.model.audio.num_mel_bins, cfg.model.audio.num_frames
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        fps = float(c.streams.video[0].average_rate)
    # frames: time points every 0.2 s below the duration, frame int(t * fps), each once
    total = len(frames)
    times = np.arange(0, total / fps, 0.2)
    ids = np.unique(np.clip((times * fps).astype(int), 0, total - 1))
    faces = []
    for i in ids[:50]:                                          # the first 10 s
        x_min, y_min, x_max, y_max = map(int, BOX)
        height, width = frames[i].shape[:2]
        cx, cy = (x_min + x_max) / 2, (y_min + y_max) / 2
        new_w, new_h = (x_max - x_min) * 1.0, (y_max - y_min) * 1.0
        x_min, x_max = max(int(cx - new_w / 2), 0), min(int(cx + new_w / 2), width)
        y_min, y_max = max(int(cy - new_h / 2), 0), min(int(cy + new_h / 2), height)
        face = Image.fromarray(frames[i][y_min:y_max, x_min:x_max]).resize((size, size), Image.BILINEAR)
        faces.append(torch.from_numpy(np.array(face)).permute(2, 0, 1).float() / 255)
    remainder = (len(faces) - 16) % 2
    if remainder:
        faces = faces[:-remainder]
    clip = torch.stack(faces)                                    # (n, 3, S, S)
    n_windows = (len(faces) - 16) // 2 + 1
    video = torch.stack([clip[s:s + 16].permute(1, 0, 2, 3) for s in range(0, len(faces) - 16 + 1, 2)])
    starts = [float(ids[s] / fps) for s in range(0, len(faces) - 16 + 1, 2)]

    # audio: `ffmpeg -ac 1 -ar 16k` writes libswresample's 16-bit mono output of every decoded sample
    with av.open(str(path)) as c:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        pcm = [o.to_ndarray()[0] for f in c.decode(audio=0) for o in resampler.resample(f)]
        pcm += [o.to_ndarray()[0] for o in resampler.resample(None)]
    waveform = torch.from_numpy(np.concatenate(pcm).astype(np.float32) / 32768)[None]     # torchaudio.load
    total_audio_len = int((len(faces) / len(times)) * waveform.size(1))
    segment_len = int((total_audio_len * 16) / (16 + 2 * (n_windows - 1)))
    stride = int((2 / 16) * segment_len)
    audio = []
    for i in range(n_windows):
        start, end = i * stride, i * stride + segment_len
        if end > total_audio_len:
            end = total_audio_len
            start = max(0, end - segment_len)
        segment = waveform[:, start:end]
        segment = segment - segment.mean()
        fbank = kaldi.fbank(segment, htk_compat=True, sample_frequency=16000, use_energy=False,
                            window_type="hanning", num_mel_bins=mel, dither=0.0, frame_shift=10)
        fbank = torch.nn.functional.interpolate(fbank.unsqueeze(0).transpose(1, 2), size=(n_fbank,),
                                                mode="linear", align_corners=False).transpose(1, 2).squeeze(0)
        # the official script hard-codes (x + 6.996) / 3.1205, the constants of the official variant
        audio.append((fbank - cfg.data.audio.norm_mean) / cfg.data.audio.norm_std)
    return video, torch.stack(audio), starts


@pytest.fixture(scope="module")
def ntsc(tmp_path_factory) -> Path:
    """12 s at 29.97 fps with 44.1 kHz stereo AAC: the frames past 10 s, the wav's AAC padding, the
    downmix and the drift of the audio windows all matter."""
    return write_stereo_video(tmp_path_factory.mktemp("official") / "ntsc.mp4", 360, NTSC)


def test_official_preset_feeds_the_model_the_official_inputs(ntsc):
    cfg = official_config()
    scorer, model = official_scorer(cfg)
    pred = scorer.score(ntsc)
    assert pred.error is None and pred.preset == "official" and pred.flags == ["truncated"]
    video, audio, starts = reference_inputs(ntsc, cfg)
    assert video.shape[0] == audio.shape[0] == pred.n_windows == 18
    assert pred.window_starts == pytest.approx(starts, abs=1e-12)
    torch.testing.assert_close(torch.cat(model.videos), video, rtol=0, atol=0)
    torch.testing.assert_close(torch.cat(model.audios), audio, rtol=0, atol=0)


def test_official_windows_differ_from_the_corrected_ones(ntsc):
    # The default preset scores the whole 12.012 s: 23 windows every 0.4 s, and one ending at the end.
    cfg = td.tiny_config("model.video.num_frames=16", "data.fps=5.0")
    corrected = VideoScorer(Recorder(), cfg, FaceCropper(BoxDetector(), size=32, margin=1.3), batch_size=64)
    pred = corrected.score(ntsc)
    assert pred.preset == "corrected" and pred.flags == [] and pred.n_windows == 24
    assert pred.window_starts[-2:] == pytest.approx([8.8, 12.012 - 3.2])
    # The official windows start on the first frame at or before 0.4 k s: the last on frame int(6.8 * 29.97)
    pred = official_scorer(official_config())[0].score(ntsc)
    assert pred.n_windows == 18 and pred.window_starts[-1] == pytest.approx(203 * 1001 / 30000)


def test_official_preset_flags_what_the_official_script_skips(tmp_path):
    cfg = official_config()
    scorer, _ = official_scorer(cfg)
    # the first frame has no face: the official script drops the video, the preset borrows a box
    pred = scorer.score(write_stereo_video(tmp_path / "black.mp4", 20, 5.0, 16000, black_first=True))
    assert pred.error is None and pred.n_windows == 3
    assert "official_skips_no_face" in pred.flags and "filled_frames" in pred.flags
    # 2 s: fewer frames than one window; scored padded, as the default preset would
    pred = scorer.score(write_stereo_video(tmp_path / "short.mp4", 10, 5.0, 16000))
    assert pred.error is None and pred.n_windows == 1
    assert pred.flags == ["official_skips_short", "padded"] and pred.window_starts == [0.0]


def test_official_preset_switches_margin_and_length():
    cfg = official_config("data.face.detector=haar", "data.face.margin=1.3", "data.face.square=true")
    cropper = build_cropper(cfg)
    assert (cropper.margin, cropper.square) == (1.0, False)
    assert build_cropper(td.tiny_config("data.face.detector=haar")).margin == 1.3
    scorer = VideoScorer(Recorder(), cfg, cropper)
    assert (scorer.preset, scorer.max_seconds) == ("official", 10.0)
    assert VideoScorer(Recorder(), cfg, cropper, max_seconds=6.0).max_seconds == 6.0
    with pytest.raises(ValueError, match="margin 1.0"):
        VideoScorer(Recorder(), cfg, FaceCropper(BoxDetector(), size=32, margin=1.3))
    with pytest.raises(ValueError, match="preset='paper'"):
        VideoScorer(Recorder(), cfg, cropper, preset="paper")
    with pytest.raises(ConfigError, match="infer.preset"):
        td.tiny_config("infer.preset=paper")


def test_the_preset_is_in_every_row(tmp_path):
    rows = [VideoPrediction(path="a.mp4", score=0.7, logit=0.85, preset="official"),
            VideoPrediction(path="b.mp4", error="no_face")]
    for p in read_predictions(write_predictions_csv(rows, tmp_path / "p.csv")):
        assert p.preset == {"a.mp4": "official", "b.mp4": "corrected"}[p.path]


# ------------------------------------------------------------------------------------- the rules, one by one


def test_official_frame_indices_by_hand():
    # 100 frames at 29.97 fps = 3.337 s: time points 0 .. 3.2 (17), frame int(0.2 k * 29.97)
    ids, n_points = official_frame_indices(100, 30000 / 1001, 0.2)
    assert n_points == 17
    assert ids.tolist() == [0, 5, 11, 17, 23, 29, 35, 41, 47, 53, 59, 65, 71, 77, 83, 89, 95]
    # 4 fps: several time points on one frame; 13 time points (0 .. 2.4 s), 10 frames
    ids, n_points = official_frame_indices(10, 4.0, 0.2)
    assert n_points == 13 and ids.tolist() == list(range(10))
    with pytest.raises(ValueError):
        official_frame_indices(10, float("nan"), 0.2)


@pytest.mark.parametrize("n_video, fps, n_used, n_windows, truncated", [
    (300, 25.0, 50, 18, True),       # 12 s: the first 50 frames
    (250, 25.0, 50, 18, False),      # exactly 10 s
    (115, 25.0, 22, 4, False),       # 23 frames, one trimmed so that n - 16 is even
    (80, 25.0, 16, 1, False),        # 3.2 s: one window
])
def test_plan_official_by_hand(n_video, fps, n_used, n_windows, truncated):
    plan = plan_official(n_video, fps, step_s=0.2, num_frames=16, stride=2, max_frames=50)
    assert plan.frame_times.size == n_used and plan.window_frames.shape == (n_windows, 16)
    assert plan.truncated == truncated
    np.testing.assert_array_equal(plan.window_frames, 2 * np.arange(n_windows)[:, None] + np.arange(16)[None])
    np.testing.assert_allclose(plan.frame_times, 0.2 * np.arange(n_used))         # frame 5 k at 25 fps
    assert plan.starts == pytest.approx([0.4 * k for k in range(n_windows)])


def test_plan_official_short_video_is_none():
    assert plan_official(75, 25.0, step_s=0.2, num_frames=16, stride=2, max_frames=50) is None     # 15 frames
    assert official_stride(0.4, 5.0) == 2 and official_stride(0.4, 1.25) == 1


def test_official_audio_spans_by_hand():
    # 10 s exactly, no padding: 3.2 s every 0.4 s
    assert official_audio_spans(50, 50, 160000, 16, 2)[:3] == [(0, 51200), (6400, 57600), (12800, 64000)]
    # 12 s plus 1024 samples of AAC padding, 50 of 60 frames used:
    # used = int(50 / 60 * 193024) = 160853; length = int(160853 * 16 / 50) = 51472; hop = int(51472 / 8) = 6434
    spans = official_audio_spans(50, 60, 12 * 16000 + 1024, 16, 2)
    assert len(spans) == 18 and spans[0] == (0, 51472) and spans[1] == (6434, 57906)
    assert spans[-1] == (17 * 6434, 17 * 6434 + 51472) and spans[-1][1] <= 160853
    with pytest.raises(ValueError, match="do not tile"):
        official_audio_spans(49, 60, 1000, 16, 2)


def test_pcm16_rounding_by_hand():
    x = np.array([0.5, 1.0, -1.0, 1.5, 1.5 / 32768, 2.5 / 32768, -2.5 / 32768, 0.7 / 32768], dtype=np.float32)
    assert pcm16(x).tolist() == [16384, 32767, -32768, 32767, 2, 2, -2, 1]        # ties to even, clipped
    np.testing.assert_array_equal(wav16(x), np.array([16384, 32767, -32768, 32767, 2, 2, -2, 1]) / 32768)
    assert wav16(x).dtype == np.float32


def test_official_window_audio_is_each_windows_own_fbank():
    cfg = official_config()
    from havic.data.audio import AudioFeatures

    features = AudioFeatures.from_config(cfg)
    wave = wav16(td.speech_like(4.0, phase=0.2))
    spans = [(0, 51472), (6434, 57906)]
    audio = OfficialWindowAudio(wave, features, [0.0, 0.4004], spans)
    got = audio.inputs([0.4004, 0.0])
    torch.testing.assert_close(got[0], features(wave[6434:57906]), rtol=0, atol=0)
    torch.testing.assert_close(got[1], features(wave[:51472]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="samples up to"):
        OfficialWindowAudio(wave[:50000], features, [0.0], [(0, 51472)])


# ------------------------------------------------------------------------------------- the command line


def test_infer_cli_preset_official(tmp_path_factory, tmp_path, capsys):
    from havic.cli import infer as infer_cli

    weights, _ = td.tiny_checkpoint(str(tmp_path_factory.getbasetemp()))
    # tiny model: 4 frames at 1.25 fps per window, so the official grid is 0.8 s, one frame between
    # windows and 12 frames in 10 s: a 12 s video gives 15 time points, 12 frames used, 9 windows
    video = td.write_talking_video(tmp_path / "talk12.mp4", 12.0)
    out = tmp_path / "p.csv"
    assert infer_cli.main([str(video), "--weights", str(weights), "--preset", "official", "--out", str(out),
                           "--no-progress", "data.face.detector=haar"]) == 0
    (row,) = read_predictions(out)
    assert row.error is None and row.preset == "official" and row.flags == ["truncated"]
    assert row.n_windows == 9 and row.window_starts == pytest.approx([0.8 * k for k in range(9)])
    with pytest.raises(SystemExit) as info:
        infer_cli.main([str(video), "--weights", str(weights), "--preset", "paper"])
    assert info.value.code == 2 and "invalid choice: 'paper'" in capsys.readouterr().err
