"""PyAV decoding: write/read round trips, frame-exact sampling, rotation, audio, typed errors."""
from __future__ import annotations

import pickle
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from havic.data.errors import MediaError
from havic.data.video import (
    DecodeStats,
    iter_frames_at,
    probe,
    read_audio,
    read_frames,
    sample_times,
    write_video,
)

SR = 16000
N_BITS, BLOCK, HEIGHT = 8, 16, 32  # frame index as 8 black/white 16x32 blocks: 128x32 frames


def _index_frames(n: int) -> np.ndarray:
    """(n, 32, 128, 3) frames whose blocks spell the frame index in binary; survives h264 at crf 18."""
    bits = (np.arange(n)[:, None] >> np.arange(N_BITS)[None, :]) & 1            # (n, bits)
    row = np.repeat(bits * 255, BLOCK, axis=1).astype(np.uint8)                    # (n, 128)
    return np.repeat(np.repeat(row[:, None, :, None], HEIGHT, axis=1), 3, axis=3)


def _frame_index(frame: np.ndarray) -> int:
    block = frame.shape[1] // N_BITS
    levels = frame.reshape(frame.shape[0], N_BITS, block, 3).mean(axis=(0, 2, 3))
    return int(sum(1 << b for b in range(N_BITS) if levels[b] > 127))


def _expected_index(t: float, starts: list[Fraction]) -> int:
    """Last frame whose exact start time is <= t (t with the same 1e-7 s tolerance for float k/fps)."""
    exact = Fraction(t) + Fraction(1, 10**7)
    return max(i for i, s in enumerate(starts) if s <= exact) if exact >= starts[0] else 0


def _tone(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


# --- writing and round trips -------------------------------------------------------------------

def test_write_probe_read_round_trip(tmp_path):
    frames = _index_frames(40)
    audio = _tone(1.6)
    out = write_video(tmp_path / "sub" / "clip.mp4", frames, 25, audio=audio)
    assert out == tmp_path / "sub" / "clip.mp4"
    assert [p.name for p in out.parent.iterdir()] == ["clip.mp4"]  # the temporary file is gone

    info = probe(out)
    assert (info.n_frames, info.width, info.height, info.rotation) == (40, 128, 32, 0)
    assert info.fps == 25.0 and info.duration == pytest.approx(1.6, abs=1e-6)
    assert info.has_audio and info.audio_sample_rate == SR

    got, rstats = read_frames(out, np.arange(40) / 25)
    assert got.shape == (40, 32, 128, 3) and got.dtype == np.uint8
    assert [_frame_index(f) for f in got] == list(range(40))
    assert np.abs(got.astype(int) - frames).mean() < 3
    assert rstats.n_yielded == 40 and rstats.n_corrupt_packets == 0

    stats = DecodeStats()
    wave = read_audio(out, stats=stats)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - len(audio)) <= 1024  # at most one AAC frame of priming/padding
    n = min(len(wave), len(audio))
    # AAC is lossy but the tone comes back in phase (the encoder delay is compensated on read).
    assert np.corrcoef(wave[1024:n - 1024], audio[1024:n - 1024])[0, 1] > 0.99
    assert stats.n_corrupt_packets == 0 and stats.n_frames > 0


def test_write_video_is_deterministic(tmp_path):
    """The same frames encode to the same bytes (seeded datasets such as the demo's are reproducible)."""
    from havic.demo.world import SyntheticConfig, plan_clips, render_clip

    # A talking face of the demo's world: the content on which x264's mbtree path varied run to run.
    config = SyntheticConfig(duration_s=6.4, fps=5.0, frame_size=96, n_identities=4, seed=0)
    clip = render_clip(plan_clips({"RVRA": 1}, config)[0], config)
    rng = np.random.default_rng(0)
    written = []
    for i in range(4):
        # Freed random buffers let the encoder's scratch memory start dirty, as in a long-running process.
        scratch = [rng.integers(0, 255, 1 << k, dtype=np.uint8) for k in range(10, 24)]
        del scratch
        path = write_video(tmp_path / f"{i}.mp4", clip.frames, 5.0, audio=clip.audio, sample_rate=16000, crf=23)
        written.append(path.read_bytes())
    assert all(w == written[0] for w in written[1:])


def test_write_video_validates_input(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "a.mp4", np.zeros((2, 32, 32, 3), np.float32), 25)
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "a.mp4", np.zeros((2, 31, 32, 3), np.uint8), 25)
    with pytest.raises(ValueError, match="strictly increasing"):
        write_video(tmp_path / "a.mp4", np.zeros((2, 32, 32, 3), np.uint8), 25, pts_seconds=[0.1, 0.1])
    assert not list(tmp_path.iterdir())


def test_sample_times():
    assert np.allclose(sample_times(3.2, 5.0), np.arange(16) * 0.2)  # 3.2 itself is excluded
    assert len(sample_times(3.21, 5.0)) == 17
    assert np.allclose(sample_times(1.0, 4.0, start=0.5), [0.5, 0.75])
    assert sample_times(0.5, 5.0, start=0.5).size == 0
    with pytest.raises(ValueError):
        sample_times(1.0, 0.0)


# --- frame accuracy ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "fps", [Fraction(24000, 1001), Fraction(25), Fraction(30000, 1001), Fraction(30), Fraction(60)],
    ids=["23.976", "25", "29.97", "30", "60"],
)
def test_frame_on_screen_at_each_time_constant_rate(tmp_path, fps):
    n = int(2 * fps)
    path = write_video(tmp_path / "cfr.mp4", _index_frames(n), fps)
    info = probe(path)
    assert info.n_frames == n and info.fps == pytest.approx(float(fps), rel=1e-9)
    starts = [k / fps for k in range(n)]
    # frame boundaries as floats (k / fps), the same accumulated in floating point (a hair off
    # the boundary either way), mid-frame, just before the next boundary, 5 fps grid, and times
    # after the last frame (which keep showing the last frame)
    accumulated = np.cumsum(np.full(n, 1 / float(fps))) - 1 / float(fps)
    assert any(Fraction(float(t)) < s for t, s in zip(accumulated, starts))
    times = sorted(
        [float(k / fps) for k in range(n)]
        + [max(float(t), 0.0) for t in accumulated]
        + [float((k + Fraction(1, 2)) / fps) for k in range(n)]
        + [float((k + 1) / fps) - 1e-4 for k in range(n)]
        + list(sample_times(info.duration, 5.0))
        + [info.duration, info.duration + 1.0]
    )
    stats = DecodeStats()
    got = [(t, _frame_index(f)) for t, f in iter_frames_at(path, times, stats=stats)]
    assert [t for t, _ in got] == times
    assert [i for _, i in got] == [min(_expected_index(t, starts), n - 1) for t in times]
    assert stats.n_yielded == len(times) and stats.n_reordered == 0


def test_frame_on_screen_variable_rate(tmp_path):
    rng = np.random.default_rng(0)
    ticks = np.concatenate([[0], np.cumsum(rng.integers(1500, 9000, size=39))])  # 1/90000 s units
    path = write_video(tmp_path / "vfr.mp4", _index_frames(40), 30, pts_seconds=ticks / 90000)
    starts = [Fraction(int(k), 90000) for k in ticks]
    times = sorted(
        [float(s) for s in starts]
        + [float(s) - 1e-4 for s in starts[1:]]
        + list(rng.uniform(0, float(starts[-1]) + 0.2, size=50))
    )
    got = [_frame_index(f) for _, f in iter_frames_at(path, times)]
    assert got == [_expected_index(t, starts) for t in times]


def test_decoding_stops_after_the_last_requested_time(tmp_path):
    path = write_video(tmp_path / "long.mp4", _index_frames(100), 25)
    frames, stats = read_frames(path, [0.0, 0.5])
    assert [_frame_index(f) for f in frames] == [0, 12]
    assert stats.n_frames < 40  # 13 frames plus decoder and reorder look-ahead, not all 100


def test_times_must_be_sorted(tmp_path):
    path = write_video(tmp_path / "a.mp4", _index_frames(5), 25)
    with pytest.raises(ValueError, match="sorted"):
        iter_frames_at(path, [0.1, 0.0])
    with pytest.raises(ValueError, match="non-negative"):
        iter_frames_at(path, [-0.1])
    assert list(iter_frames_at(path, [])) == []


def test_resize(tmp_path):
    path = write_video(tmp_path / "a.mp4", _index_frames(10), 25)
    frames, _ = read_frames(path, np.arange(10) / 25, size=(64, 16))
    assert frames.shape == (10, 16, 64, 3)
    assert [_frame_index(f) for f in frames] == list(range(10))


# --- rotation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("rotation", [90, 180, 270, -90])
def test_rotation_metadata_is_applied(tmp_path, rotation):
    # Asymmetric picture: a bright top-left quarter and a mid-grey right half.
    img = np.zeros((32, 64, 3), np.uint8)
    img[:16, :32] = 255
    img[:, 32:] = 128
    path = write_video(tmp_path / "rot.mp4", np.stack([img] * 3), 25, crf=0, rotation=rotation)
    info = probe(path)
    k = (rotation % 360) // 90
    assert info.rotation == rotation % 360
    assert (info.width, info.height) == ((32, 64) if k % 2 else (64, 32))
    frames, _ = read_frames(path, [0.0])
    # the display matrix angle is counter-clockwise, as np.rot90 is
    expected = np.rot90(img, k=k)
    assert frames.shape[1:] == expected.shape
    assert np.abs(frames[0].astype(int) - expected).mean() < 4
    small, _ = read_frames(path, [0.0], size=(info.width // 2, info.height // 2))
    assert small.shape == (1, info.height // 2, info.width // 2, 3)
    assert np.abs(small[0].astype(int) - expected[::2, ::2]).mean() < 12


# --- audio: downmix and length -----------------------------------------------------------------

def _write_with_audio(path: Path, channels: np.ndarray, codec: str, rate: int) -> Path:
    """Five black frames and one audio stream of `channels` ((C, S): float in [-1, 1], or int16 for PCM)."""
    layout = {1: "mono", 2: "stereo"}[channels.shape[0]]
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=5)
        vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        astream = c.add_stream(codec, rate=rate, layout=layout)
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 5)
            c.mux(vs.encode(frame))
        c.mux(vs.encode(None))
        if channels.dtype == np.int16:                    # packed: L R L R ...
            data, fmt = channels.T.reshape(1, -1), "s16"
        else:
            data, fmt = channels.astype(np.float32), "fltp"
        step = 4096 * (channels.shape[0] if fmt == "s16" else 1)
        for start in range(0, data.shape[1], step):
            aframe = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, start:start + step]), format=fmt,
                                                layout=layout)
            aframe.sample_rate, aframe.pts = rate, start // (step // 4096)
            aframe.time_base = Fraction(1, rate)
            c.mux(astream.encode(aframe))
        c.mux(astream.encode(None))
    return path


def _plain_mono(path: Path, rate: int = SR) -> np.ndarray:
    """Every sample through PyAV's resampler alone (mono, float): the decoding before the downmix fix."""
    out = []
    with av.open(str(path)) as c:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        for frame in c.decode(audio=0):
            out += [o.to_ndarray().reshape(-1) for o in resampler.resample(frame)]
        out += [o.to_ndarray().reshape(-1) for o in resampler.resample(None)]
    return np.concatenate(out)


def test_stereo_downmix_is_the_mean_of_the_channels(tmp_path):
    # 16-bit PCM decodes exactly, so the mix is checked to the last bit: (L + R) / 2, as `ffmpeg -ac 1`
    # writes it into the reference wav files; unscaled float output would be (L + R) / sqrt(2).
    lr = np.random.default_rng(0).integers(-20000, 20000, (2, SR), dtype=np.int16)
    path = _write_with_audio(tmp_path / "pcm.mkv", lr, "pcm_s16le", SR)
    expected = (lr[0].astype(np.float32) + lr[1].astype(np.float32)) / 65536
    np.testing.assert_array_equal(read_audio(path), expected)
    np.testing.assert_array_equal(read_audio(path, trim=False), expected)


@pytest.mark.parametrize("sign, gain", [(1, 1.0), (-1, 0.0)])
def test_stereo_aac_downmix(tmp_path, sign, gain):
    # AAC at 44.1 kHz: the same tone on both channels comes back at its own level (not 3 dB louder);
    # opposite channels cancel.
    t = np.arange(2 * 44100) / 44100
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    wave = read_audio(_write_with_audio(tmp_path / "aac.mp4", np.stack([tone, sign * tone]), "aac", 44100))
    level = np.sqrt(np.mean(wave[1600:-1600] ** 2)) / (0.3 / np.sqrt(2))
    assert level == pytest.approx(gain, abs=0.02)


@pytest.mark.parametrize("rate", [SR, 44100])
def test_mono_audio_is_unchanged_by_the_downmix_fix(tmp_path, rate):
    t = np.arange(round(1.7 * rate)) / rate
    path = _write_with_audio(tmp_path / "mono.mp4", (0.3 * np.sin(2 * np.pi * 440 * t))[None], "aac", rate)
    plain = _plain_mono(path)
    np.testing.assert_array_equal(read_audio(path, trim=False), plain)
    trimmed = read_audio(path)
    np.testing.assert_array_equal(trimmed, plain[: trimmed.size])


def test_untrimmed_audio_keeps_the_aac_padding(tmp_path):
    # 16 kHz AAC, nothing resampled: the decoder gives whole 1024-sample frames (the priming frame
    # dropped), the last one padded; trimming cuts that padding back to the stream duration (which
    # the container keeps in milliseconds: 1.688 s for 27,000 samples).
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(27000) / SR)
    path = _write_with_audio(tmp_path / "mono.mp4", tone[None], "aac", SR)
    full, trimmed = read_audio(path, trim=False), read_audio(path)
    assert full.size == 27 * 1024 and trimmed.size == 27008
    np.testing.assert_array_equal(full[:27008], trimmed)


# --- errors ------------------------------------------------------------------------------------

def test_media_error_fields_and_pickling():
    e = MediaError(Path("/x/y.mp4"), "no_face", "3 of 16 frames")
    assert (e.path, e.reason, e.detail) == ("/x/y.mp4", "no_face", "3 of 16 frames")
    assert str(e) == "/x/y.mp4: no_face (3 of 16 frames)"
    assert str(MediaError("a", "too_short")) == "a: too_short"
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.path, e2.reason, e2.detail) == (e.path, e.reason, e.detail)


def _reason(fn, *args) -> str:
    with pytest.raises(MediaError) as info:
        fn(*args)
    return info.value.reason


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.mp4"
    assert _reason(probe, missing) == "not_found"
    assert _reason(read_frames, missing, [0.0]) == "not_found"
    assert _reason(iter_frames_at, missing, [0.0]) == "not_found"  # raised at the call
    assert _reason(read_audio, missing) == "not_found"


def test_text_file_is_unreadable(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 20)
    assert _reason(probe, fake) == "unreadable"
    assert _reason(read_frames, fake, [0.0]) == "unreadable"
    assert _reason(read_audio, fake) == "unreadable"


def test_audio_only_file(tmp_path):
    path = tmp_path / "speech.wav"
    audio = _tone(0.5)
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=SR, layout="mono")
        frame = av.AudioFrame.from_ndarray((audio * 32767).astype(np.int16)[None], format="s16", layout="mono")
        frame.sample_rate = SR
        c.mux(s.encode(frame))
        c.mux(s.encode(None))
    assert _reason(probe, path) == "no_video_stream"
    assert _reason(read_frames, path, [0.0]) == "no_video_stream"
    wave = read_audio(path)
    assert len(wave) == len(audio)
    np.testing.assert_allclose(wave, audio, atol=1e-4)


def test_video_without_audio(tmp_path):
    path = write_video(tmp_path / "silent.mp4", _index_frames(5), 25)
    assert not probe(path).has_audio and probe(path).audio_sample_rate is None
    assert read_audio(path) is None


def test_undecodable_frames(tmp_path):
    # Valid container, h264 payload zeroed: every packet is rejected, so no frame at all.
    path = write_video(tmp_path / "bad.mp4", np.random.default_rng(0).integers(0, 255, (10, 32, 32, 3), np.uint8), 25)
    data = bytearray(path.read_bytes())
    start, end = data.find(b"mdat") + 4, data.find(b"moov") - 4
    assert 0 < start < end
    data[start:end] = bytes(end - start)
    path.write_bytes(bytes(data))
    assert _reason(probe, path) == "no_frames"
    with pytest.raises(MediaError) as info:
        read_frames(path, [0.0])
    assert info.value.reason == "no_frames" and "corrupt packets" in info.value.detail


# --- real file: megamind.avi (MPEG-4 part 2 in AVI with packed B-frames, AC3 with a bad packet) --

@pytest.fixture(scope="module")
def megamind(request) -> Path:
    path = request.getfixturevalue("assets_dir") / "media" / "megamind.avi"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    return path


def test_megamind_probe(megamind):
    info = probe(megamind)
    assert info.duration == pytest.approx(11.26, abs=0.05)
    assert (info.width, info.height, info.rotation) == (720, 528, 0)
    assert info.fps == pytest.approx(23.976, abs=1e-3) and info.n_frames == 270
    assert info.has_audio and info.audio_sample_rate == 48000


def test_megamind_audio_skips_corrupt_packet(megamind):
    stats = DecodeStats()
    wave = read_audio(megamind, stats=stats)
    assert stats.n_corrupt_packets >= 1
    assert wave.dtype == np.float32
    assert len(wave) / SR == pytest.approx(11.26, abs=0.05)
    # The bad packet is the first one (32 ms of AC3 = 512 samples at 16 kHz): replaced by silence,
    # so the rest keeps its timing.
    assert np.all(wave[:512] == 0)
    assert np.sqrt(np.mean(wave[512:] ** 2)) > 0.01 and np.abs(wave).max() <= 1.0


def test_megamind_frames_at_5fps(megamind):
    info = probe(megamind)
    times = sample_times(info.duration, 5.0)
    frames, stats = read_frames(megamind, times)
    assert frames.shape == (57, 528, 720, 3) and stats.n_yielded == 57
    # AVI gives decoding timestamps, so the frames come out with shuffled presentation
    # timestamps (1, 2, 3, 5, 4, ...); they are re-sorted. Reference: the decoder's output order
    # is presentation order, frame k at k / fps.
    assert stats.n_reordered > 0
    with av.open(str(megamind)) as c:
        c.streams.video[0].thread_type = "AUTO"
        reference = [f for f in c.decode(video=0)]
        rate = c.streams.video[0].average_rate
        want = [min(int(Fraction(t) * rate + Fraction(1, 10**7)), len(reference) - 1) for t in times]
        for got, k in zip(frames, want):
            np.testing.assert_array_equal(got, reference[k].to_ndarray(format="rgb24"))
