"""Preprocessing into the clip cache: clip planning, one video in detail, and the CLI acceptance run.

The acceptance data set (built once per module) holds `megamind.avi` (read in place from the shared
assets through an absolute manifest path, when they exist) and synthetic mp4s written here: a talking face
(`skimage.data.astronaut()` moving a few pixels, with a speech-like harmonic tone), the same without
audio, a 2 s one, one without a face, one whose face leaves after 3 s, a truncated file and a
missing one.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from havic.config import load_config
from havic.data import preprocess as pre
from havic.data.audio import log_mel_fbank
from havic.data.cache import ClipCache, entry_path, marker_path, read_entry_meta, settings_from_config, video_key
from havic.data.face import FaceCropper
from havic.data.manifest import ManifestRow, write_manifest
from havic.data.preprocess import PreprocessSettings, plan_clips, process_video
from havic.data.video import read_audio, write_video

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "preprocess.py"
TINY = [str(REPO / "configs" / "tiny.yaml"), "data.face.detector=haar"]   # 4 frames of 32 px per 3.2 s clip


def speech_like(seconds: float, sr: int = 16000) -> np.ndarray:
    """A voiced-speech-like signal: harmonics of a gliding 140 Hz pitch, 4 syllables per second."""
    t = np.arange(round(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(140 + 20 * np.sin(2 * np.pi * 0.7 * t)) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 4 * t))
    return (0.2 * voiced * envelope).astype(np.float32)


def face_frames(n: int, fps: float, size: int = 224, face_until: float | None = None) -> np.ndarray:
    """(n, size, size, 3) the astronaut on grey, moving a few pixels; grey only after `face_until` s."""
    from skimage import data

    face = cv2.resize(data.astronaut(), (size - 24, size - 24), interpolation=cv2.INTER_AREA)
    out = np.full((n, size, size, 3), 120, dtype=np.uint8)
    for j in range(n):
        if face_until is not None and j / fps >= face_until:
            continue
        dx = int(round(12 + 6 * np.sin(2 * np.pi * 0.5 * j / fps)))
        dy = int(round(12 + 5 * np.cos(2 * np.pi * 0.3 * j / fps)))
        out[j, dy:dy + size - 24, dx:dx + size - 24] = face
    return out


def grey_frames(n: int, size: int = 224) -> np.ndarray:
    levels = 100 + (np.arange(n) % 20)
    return np.broadcast_to(levels[:, None, None, None], (n, size, size, 3)).astype(np.uint8)


FPS = 10


def cli_main(argv: list[str]) -> int:
    """`main` of tools/preprocess.py, loaded from its file (tools/ is not an installed package)."""
    spec = importlib.util.spec_from_file_location("preprocess_cli", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """The synthetic videos (no shared assets needed)."""
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "talk.mp4", face_frames(7 * FPS, FPS), FPS, audio=speech_like(7.0))
    write_video(root / "sub" / "talk.mp4", face_frames(4 * FPS, FPS), FPS, audio=speech_like(4.0))  # same name
    write_video(root / "mute.mp4", face_frames(4 * FPS, FPS), FPS)
    write_video(root / "short.mp4", face_frames(2 * FPS, FPS), FPS, audio=speech_like(2.0))
    write_video(root / "noface.mp4", grey_frames(4 * FPS), FPS, audio=speech_like(4.0))
    write_video(root / "leaves.mp4", face_frames(7 * FPS, FPS, face_until=3.0), FPS, audio=speech_like(7.0))
    whole = (root / "talk.mp4").read_bytes()
    (root / "corrupt.mp4").write_bytes(whole[: len(whole) // 2])      # index (moov) cut off
    return root


@pytest.fixture(scope="module")
def dataset(videos, request):
    """(root, manifest, expected outcome per manifest path); megamind.avi joins when the assets exist."""
    expected = {}
    try:
        assets_dir = request.getfixturevalue("assets_dir")
        expected[str(assets_dir / "media" / "megamind.avi")] = ("ok", 3, ["corrupt_packets"])   # absolute path
    except pytest.skip.Exception:
        pass
    expected.update({
        "talk.mp4": ("ok", 2, []),
        "sub/talk.mp4": ("ok", 1, []),
        "mute.mp4": ("ok", 1, ["no_audio"]),
        "short.mp4": ("probe", "too_short"),
        "noface.mp4": ("face", "no_face"),
        "leaves.mp4": ("ok", 1, ["dropped_clips"]),
        "corrupt.mp4": ("probe", "unreadable"),
        "missing.mp4": ("probe", "not_found"),
    })
    rows = [ManifestRow(p, 0, 0, 0, f"id{i % 3}", "real", "train" if i % 2 else "test") for i, p in enumerate(expected)]
    manifest = write_manifest(rows, videos / "manifest.csv")
    return videos, manifest, expected


def outcome(out: Path, path: str):
    entry, marker = entry_path(out, video_key(path)), marker_path(out, video_key(path))
    if entry.is_file():
        return "ok", entry
    if marker.is_file():
        return "failed", marker
    return None, None


# ---------------------------------------------------------------------------------------------- units

def test_plan_clips_grid_and_lengths():
    clips = plan_clips(7.0, 3.2, 5.0, 16)
    assert [c.clip for c in clips] == [0, 1] and [c.start_s for c in clips] == [0.0, 3.2]
    np.testing.assert_array_equal(clips[1].times, 3.2 + np.arange(16) / 5.0)
    assert np.diff(clips[0].times) == pytest.approx(0.2)           # the exact inference grid, not linspace
    assert len(plan_clips(6.4, 3.2, 5.0, 16)) == 2                   # start + clip <= duration
    assert len(plan_clips(6.4 - 1e-9, 3.2, 5.0, 16)) == 2            # float error in the duration
    assert len(plan_clips(6.39, 3.2, 5.0, 16)) == 1
    assert len(plan_clips(3.2, 3.2, 5.0, 16)) == 1                   # the official code drops this one
    assert plan_clips(3.19, 3.2, 5.0, 16) == [] and plan_clips(float("nan"), 3.2, 5.0, 16) == []


def test_settings_from_config_agree():
    cfg = load_config([TINY[0]], ["data.face.detector=haar", "data.face.margin=1.4"])
    s = PreprocessSettings.from_config(cfg)
    assert s.cache_settings() == settings_from_config(cfg)
    assert (s.num_frames, s.image_size, s.num_mel_bins, s.margin) == (4, 32, 32, 1.4)
    with pytest.raises(ValueError, match="num_frames"):
        PreprocessSettings(clip_seconds=3.2, fps=5.0, num_frames=4)


class SquareDetector:
    """Finds the bright square of `square_video` frames (stands in for a face detector)."""

    def detect(self, frames):
        out = []
        for f in frames:
            ys, xs = np.nonzero(f[..., 0] > 128)
            out.append(np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 1.0]], np.float32)
                       if xs.size else np.zeros((0, 5), np.float32))
        return out


def square_video(path: Path, seconds: float, until: float | None = None, audio: bool = True) -> None:
    """64 px frames at 10 fps; frame j shows a 12 px white square at x = 4 + j % 40 (its index, readable)."""
    n = int(seconds * FPS)
    frames = np.full((n, 64, 64, 3), 30, dtype=np.uint8)
    for j in range(n):
        if until is None or j / FPS < until:
            x = 4 + j % 40
            frames[j, 20:32, x:x + 12] = 255
    write_video(path, frames, FPS, audio=speech_like(seconds) if audio else None)


def test_process_video_exact_times_boxes_fbank_and_dropped_clip(tmp_path):
    settings = PreprocessSettings(fps=1.25, num_frames=4, image_size=16, num_mel_bins=32, detector="haar")
    cropper = FaceCropper(SquareDetector(), size=16, margin=1.0, max_gap_s=1.0)
    square_video(tmp_path / "a.mp4", 7.0)
    square_video(tmp_path / "b.mp4", 7.0, until=3.0)
    out = tmp_path / "cache"

    res = process_video("a.mp4", tmp_path, out, settings, cropper)
    assert res.ok and res.n_clips == 2 and res.flags == []
    cache_file = entry_path(out, video_key("a.mp4"))
    meta = read_entry_meta(cache_file)
    assert meta["clips"] == [0, 1] and meta["dropped"] == [] and meta["settings"] == settings.cache_settings()
    wave = read_audio(tmp_path / "a.mp4")
    with np.load(cache_file) as z:
        for k in (0, 1):
            times = z[f"clip{k}/frame_times"]
            np.testing.assert_array_equal(times, 3.2 * k + np.arange(4) / 1.25)
            shown = np.floor(times * FPS + 1e-6).astype(int)            # the frame on screen at each time
            np.testing.assert_allclose(z[f"clip{k}/boxes"][:, 0], 4 + shown % 40, atol=1)
            assert z[f"clip{k}/is_detected"].all()
            fb = z[f"clip{k}/fbank"]
            assert fb.shape == (318, 32) and fb.dtype == np.float16
            start = round(3.2 * k * 16000)
            ref = log_mel_fbank(wave[start:start + 51200], 16000, 32).numpy()
            np.testing.assert_allclose(fb.astype(np.float32), ref, rtol=2 ** -10, atol=1e-3)

    res = process_video("b.mp4", tmp_path, out, settings, cropper)
    assert res.ok and res.n_clips == 1 and res.n_dropped == 1 and res.flags == ["dropped_clips"]
    meta = read_entry_meta(entry_path(out, video_key("b.mp4")))
    assert meta["clips"] == [0] and meta["dropped"][0]["clip"] == 1 and meta["dropped"][0]["reason"] == "no_face"

    # No face anywhere is a video failure at stage face, with a marker instead of an entry.
    square_video(tmp_path / "c.mp4", 4.0, until=0.0, audio=False)
    res = process_video("c.mp4", tmp_path, out, settings, cropper)
    assert not res.ok and (res.stage, res.reason) == ("face", "no_face")
    marker = json.loads(marker_path(out, video_key("c.mp4")).read_text())
    assert (marker["item"], marker["stage"], marker["reason"]) == ("c.mp4", "face", "no_face")
    assert not entry_path(out, video_key("c.mp4")).exists()


# ---------------------------------------------------------------------------------------------- acceptance

def check_outcomes(out: Path, expected: dict, paths) -> None:
    for path in paths:
        want = expected[path]
        got, file = outcome(out, path)
        if want[0] == "ok":
            assert got == "ok", (path, got, file and file.read_text())
            meta = read_entry_meta(file)
            assert len(meta["clips"]) == want[1], (path, meta["clips"], meta["dropped"])
            for flag in want[2]:
                assert flag in meta["flags"], (path, meta["flags"])
            assert ("no_audio" in meta["flags"]) == (not meta["has_audio"])
        else:
            assert got == "failed", (path, got)
            m = json.loads(file.read_text())
            assert (m["stage"], m["reason"]) == want, (path, m)


def mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*") if p.suffix in (".npz", ".json")
            and p.name != "cache.json"}


@pytest.mark.slow
def test_acceptance_shards_resume_and_outcomes(dataset, capsys):
    root, manifest, expected = dataset
    out = root.parent / "cache_haar"
    paths = list(expected)
    odd = [p for i, p in enumerate(paths) if i % 2 == 1]
    even = [p for i, p in enumerate(paths) if i % 2 == 0]

    # 1. Shard 1/2 as a user runs it: a subprocess, two worker processes.
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, str(TOOL), str(manifest), "--root", str(root), "--out", str(out), *TINY,
                          "--workers", "2", "--shard", "1/2", "--no-progress"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert all(outcome(out, p)[0] is not None for p in odd)
    assert all(outcome(out, p)[0] is None for p in even)                # shards partition the rows
    check_outcomes(out, expected, odd)
    assert f"{len(odd)} videos in the shard" in res.stdout
    before = mtimes(out)

    # 2. The other shard in-process; shard 1's files are untouched.
    main = cli_main
    assert main([str(manifest), "--root", str(root), "--out", str(out), *TINY, "--shard", "0/2", "--no-progress"]) == 0
    check_outcomes(out, expected, paths)
    after = mtimes(out)
    assert {k: after[k] for k in before} == before
    capsys.readouterr()

    # 3. A full re-run does nothing; --retry-failed redoes exactly the failed videos.
    assert main([str(manifest), "--root", str(root), "--out", str(out), *TINY, "--no-progress"]) == 0
    n_failed = sum(w[0] != "ok" for w in expected.values())
    assert f"{len(paths)} already done, 0 written, 0 failed" in capsys.readouterr().out
    assert mtimes(out) == after
    assert main([str(manifest), "--root", str(root), "--out", str(out), *TINY, "--retry-failed", "--no-progress"]) == 0
    assert f"{len(paths) - n_failed} already done, 0 written, {n_failed} failed" in capsys.readouterr().out
    redone = {k for k, t in mtimes(out).items() if t != after[k]}
    assert redone == {str(marker_path(out, video_key(p)).relative_to(out)) for p, w in expected.items() if w[0] != "ok"}

    # 4. The index and the failures table.
    cache = ClipCache(out)
    recs = cache.records()
    n_clips = sum(w[1] for w in expected.values() if w[0] == "ok")
    assert [r.path for r in recs] == [p for p in paths for _ in range(expected[p][1] if expected[p][0] == "ok" else 0)]
    assert len(cache.records("test")) + len(cache.records("train")) == len(recs) == n_clips
    with open(out / "failures.csv", newline="") as f:
        fails = {r["item"]: (r["stage"], r["reason"]) for r in csv.DictReader(f)}
    assert fails == {**{p: w for p, w in expected.items() if w[0] != "ok"}, "leaves.mp4#clip1": ("face", "no_face")}
    for r in recs:
        clip = cache.load_clip(r)
        assert clip.frames.shape == (4, 32, 32, 3)
        assert (clip.fbank is None) == (r.path == "mute.mp4") == ("no_audio" in r.flags.split(";"))
        if clip.fbank is not None:
            assert clip.fbank.shape == (318, 32)
        np.testing.assert_array_equal(clip.meta["frame_times"], r.start_s + np.arange(4) / 1.25)
    # The face crop is the astronaut's face: mostly skin-coloured, unlike the grey background.
    talk = next(r for r in recs if r.path == "talk.mp4")
    frames = cache.load_clip(talk).frames.astype(float)
    assert frames[..., 0].mean() > frames[..., 2].mean() + 20

    # 5. --reindex alone and a settings mismatch.
    assert main([str(manifest), "--out", str(out), *TINY, "--reindex"]) == 0
    assert f"{n_clips} clips (1 dropped)" in capsys.readouterr().out
    assert main([str(manifest), "--root", str(root), "--out", str(out), *TINY, "data.face.margin=1.0",
                 "--no-progress"]) == 2
    assert "face.margin" in capsys.readouterr().err


def test_interrupted_run_resumes_without_redoing(videos, monkeypatch, capsys):
    root = videos
    rows = [ManifestRow(p, 0) for p in ("talk.mp4", "mute.mp4", "sub/talk.mp4")]
    manifest = write_manifest(rows, root.parent / "small.csv")
    out = root.parent / "cache_interrupted"
    args = [str(manifest), "--root", str(root), "--out", str(out), *TINY, "--no-progress"]
    main = cli_main
    real_write = pre.write_video_entry
    calls = []

    def write_then_die(*a, **kw):
        calls.append(a[1])
        if len(calls) == 2:
            raise KeyboardInterrupt                                       # killed while writing item 2
        return real_write(*a, **kw)

    monkeypatch.setattr(pre, "write_video_entry", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    first = entry_path(out, video_key("talk.mp4"))
    assert first.is_file()
    assert outcome(out, "mute.mp4") == (None, None)                       # not counted as done, nor failed
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]                # cleaned up
    stamp = first.stat().st_mtime_ns

    # A process killed outright leaves its temporary file; it does not count as a finished entry.
    stale = entry_path(out, video_key("mute.mp4"))
    stale.parent.mkdir(parents=True, exist_ok=True)
    (stale.parent / f".{stale.name}.dead0000.tmp").write_bytes(b"PK half a file")

    monkeypatch.setattr(pre, "write_video_entry", real_write)
    assert main(args) == 0
    assert "1 already done, 2 written" in capsys.readouterr().out
    assert first.stat().st_mtime_ns == stamp
    assert all(outcome(out, r.path)[0] == "ok" for r in rows)


def test_retinaface_run(videos, assets_dir, tmp_path):
    root = videos
    megamind = str(assets_dir / "media" / "megamind.avi")
    manifest = write_manifest([ManifestRow(megamind, 0), ManifestRow("talk.mp4", 0)], tmp_path / "m.csv")
    out = tmp_path / "cache"
    main = cli_main
    assert main([str(manifest), "--root", str(root), "--out", str(out), TINY[0], "data.face.detector=retinaface",
                 f"data.face.weights={assets_dir / 'facexzoo/models'}", "--no-progress"]) == 0
    cache = ClipCache(out)
    assert cache.settings["face.detector"] == "retinaface"
    recs = cache.records()
    assert [r.path for r in recs] == [megamind] * 3 + ["talk.mp4"] * 2
    meta = read_entry_meta(out / recs[0].file)
    assert meta["width"] == 720 and meta["n_corrupt_audio_packets"] == 1 and "corrupt_packets" in meta["flags"]
    for r in recs:
        clip = cache.load_clip(r)
        boxes = clip.meta["boxes"]
        assert clip.meta["is_detected"].sum() >= 3
        width = meta["width"] if r.path == megamind else 224
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 0] < boxes[:, 2]).all()
