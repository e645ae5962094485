"""The clip cache: entry round trip, lazy per-clip reads, keys, settings, atomic writes, the index."""
from __future__ import annotations

import csv
import hashlib
import json
import re

import cv2
import numpy as np
import pytest

from havic.config import load_config
from havic.data import cache as cache_mod
from havic.data.cache import (
    ClipCache,
    ClipPayload,
    ClipRecord,
    build_index,
    entry_path,
    marker_path,
    read_entry_meta,
    settings_from_config,
    video_key,
    write_failure_marker,
    write_video_entry,
)
from havic.data.manifest import ManifestRow

SETTINGS = {
    "clip_seconds": 3.2, "fps": 5.0, "num_frames": 16, "image_size": 32, "jpeg_quality": 95,
    "face.detector": "haar", "face.conf_threshold": 0.7, "face.margin": 1.3, "face.square": False,
    "face.max_gap_s": 1.0, "audio.sample_rate": 16000, "audio.num_mel_bins": 8,
    "audio.frame_length_ms": 25.0, "audio.frame_shift_ms": 10.0,
}


def smooth_frames(n: int, size: int, seed: int) -> np.ndarray:
    """(n, size, size, 3) uint8 smooth colour images (JPEG-friendly, like face crops)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC) for f in small])


def payload(k: int, start: float, n: int = 4, size: int = 32, audio: bool = True, seed: int = 0) -> ClipPayload:
    rng = np.random.default_rng(seed + k)
    return ClipPayload(
        frames=smooth_frames(n, size, seed + k),
        fbank=(rng.normal(-6.0, 4.0, size=(21, 8)).astype(np.float32) if audio else None),
        start_s=start,
        frame_times=start + np.arange(n) / 1.25,
        boxes=rng.uniform(0, 100, size=(n, 4)).astype(np.float32),
        is_detected=rng.random(n) > 0.3,
        clip=k,
    )


@pytest.fixture()
def cache_root(tmp_path):
    ClipCache.create(tmp_path / "cache", SETTINGS)
    return tmp_path / "cache"


# ---------------------------------------------------------------------------------------------- round trip

def test_round_trip_frames_fbank_and_metadata(cache_root):
    clips = [payload(0, 0.0), payload(2, 6.4)]          # clip 1 dropped: indices keep their meaning
    meta = {"source": "a/b.mp4", "fps": 25.0, "duration": 10.0, "flags": ["corrupt_packets"],
            "n_corrupt_packets": np.int64(3), "dropped": [{"clip": 1, "start_s": 3.2, "stage": "face",
                                                           "reason": "no_face", "detail": "x"}]}
    path = write_video_entry(cache_root, "k-0123456789", clips, meta, jpeg_quality=95)
    assert path == entry_path(cache_root, "k-0123456789") and path.is_file()

    # Plain numpy reads it without pickle.
    with np.load(path, allow_pickle=False) as z:
        assert z["clip0/fbank"].dtype == np.float16 and z["clip2/jpeg"].dtype == np.uint8
        assert z["clip_ids"].tolist() == [0, 2] and z["clip_starts"].tolist() == [0.0, 6.4]
        assert "clip1/jpeg" not in z.files

    m = read_entry_meta(path)
    assert m["clips"] == [0, 2] and m["has_audio"] is True and m["n_corrupt_packets"] == 3
    assert m["format_version"] == cache_mod.FORMAT_VERSION and m["jpeg_quality"] == 95

    cache = ClipCache(cache_root)
    for p in clips:
        rec = ClipRecord(key="k-0123456789", clip=p.clip, path="a/b.mp4", label=1, audio_label=0, video_label=1,
                         group="g", category="FVRA", split="train", start_s=p.start_s, has_audio=True,
                         file=path.relative_to(cache_root).as_posix())
        data = cache.load_clip(rec)
        assert data.frames.shape == p.frames.shape and data.frames.dtype == np.uint8
        err = np.abs(data.frames.astype(int) - p.frames.astype(int))
        assert err.mean() < 4 and err.max() < 40, (err.mean(), err.max())     # JPEG q95, 4:2:0 chroma
        # Exactly what an independent JPEG q95 encode/decode of the same RGB frames gives.
        expected = [cv2.imdecode(cv2.imencode(".jpg", f[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1],
                                 cv2.IMREAD_COLOR)[..., ::-1] for f in p.frames]
        np.testing.assert_array_equal(data.frames, np.stack(expected))
        assert data.fbank.dtype == np.float32 and data.fbank.shape == p.fbank.shape
        np.testing.assert_allclose(data.fbank, p.fbank, rtol=2 ** -11, atol=1e-7)  # float16 rounding
        np.testing.assert_array_equal(data.meta["frame_times"], p.frame_times)
        np.testing.assert_array_equal(data.meta["boxes"], p.boxes)
        np.testing.assert_array_equal(data.meta["is_detected"], p.is_detected)
        assert data.meta["clip"] == p.clip and data.meta["start_s"] == p.start_s
        assert data.meta["source"] == "a/b.mp4" and data.meta["flags"] == ["corrupt_packets"]


def test_jpeg_colour_order_is_rgb(cache_root):
    p = payload(0, 0.0)
    p.frames = np.zeros_like(p.frames)
    p.frames[..., 0] = 200                                # pure red
    path = write_video_entry(cache_root, "red-0000000000", [p], {})
    rec = ClipRecord("red-0000000000", 0, "red.mp4", 0, 0, 0, "", "", "", 0.0, True,
                     path.relative_to(cache_root).as_posix())
    frames = ClipCache(cache_root).load_clip(rec).frames
    assert abs(frames[..., 0].mean() - 200) < 2 and frames[..., 1:].mean() < 2


def test_audio_less_entry_has_no_fbank(cache_root):
    path = write_video_entry(cache_root, "mute-0000000000", [payload(0, 0.0, audio=False)], {"flags": ["no_audio"]})
    assert read_entry_meta(path)["has_audio"] is False
    rec = ClipRecord("mute-0000000000", 0, "mute.mp4", 0, 0, 0, "", "", "", 0.0, False,
                     path.relative_to(cache_root).as_posix())
    assert ClipCache(cache_root).load_clip(rec).fbank is None


def test_load_clip_reads_only_its_own_members(cache_root, monkeypatch):
    clips = [payload(k, 3.2 * k) for k in range(4)]
    path = write_video_entry(cache_root, "lazy-0000000000", clips, {})
    accessed = []
    original = np.lib.npyio.NpzFile.__getitem__

    def spy(self, key):
        accessed.append(key)
        return original(self, key)

    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", spy)
    rec = ClipRecord("lazy-0000000000", 2, "lazy.mp4", 0, 0, 0, "", "", "", 6.4, True,
                     path.relative_to(cache_root).as_posix())
    ClipCache(cache_root).load_clip(rec)
    assert accessed, "the spy saw nothing"
    others = [k for k in accessed if k.startswith("clip") and not k.startswith("clip2/")
              and k not in ("clip_ids", "clip_starts")]
    assert others == [], others


def test_missing_clip_is_a_key_error(cache_root):
    path = write_video_entry(cache_root, "one-0000000000", [payload(0, 0.0)], {})
    rec = ClipRecord("one-0000000000", 5, "one.mp4", 0, 0, 0, "", "", "", 16.0, True,
                     path.relative_to(cache_root).as_posix())
    with pytest.raises(KeyError, match="no clip 5"):
        ClipCache(cache_root).load_clip(rec)


@pytest.mark.parametrize("bad, match", [
    ([], "no clips"),
    ([payload(0, 0.0), payload(1, 3.2, audio=False)], "some clips have an fbank"),
    ([payload(0, 0.0), payload(0, 3.2)], "distinct"),
])
def test_write_rejects_inconsistent_clips(cache_root, bad, match):
    with pytest.raises(ValueError, match=match):
        write_video_entry(cache_root, "bad-0000000000", bad, {})
    assert not entry_path(cache_root, "bad-0000000000").exists()


def test_write_rejects_bad_shapes(cache_root):
    p = payload(0, 0.0)
    p.boxes = p.boxes[:, :3]
    with pytest.raises(ValueError, match="boxes must have shape"):
        write_video_entry(cache_root, "bad-0000000000", [p], {})
    p = payload(0, 0.0)
    p.frames = p.frames.astype(np.float32)
    with pytest.raises(ValueError, match="uint8"):
        write_video_entry(cache_root, "bad-0000000000", [p], {})


# ---------------------------------------------------------------------------------------------- atomicity

def test_failed_write_leaves_no_partial_file(cache_root, monkeypatch):
    key = "atom-0000000000"
    good = write_video_entry(cache_root, key, [payload(0, 0.0)], {"version": "old"})
    before = good.read_bytes()

    def broken_savez(f, **members):
        f.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(cache_mod.np, "savez", broken_savez)
    with pytest.raises(OSError, match="simulated"):
        write_video_entry(cache_root, key, [payload(0, 0.0), payload(1, 3.2)], {"version": "new"})
    assert good.read_bytes() == before                    # the previous entry is untouched
    assert [p.name for p in good.parent.iterdir()] == [good.name]     # no temporary left behind

    other = entry_path(cache_root, "fresh-0000000001")
    with pytest.raises(OSError):
        write_video_entry(cache_root, "fresh-0000000001", [payload(0, 0.0)], {})
    assert not other.exists() and not any(other.parent.glob("*"))


# ---------------------------------------------------------------------------------------------- keys

def test_video_key_is_stable_safe_and_unique():
    key = video_key("id01/abc/00001.mp4")
    digest = hashlib.blake2b(b"id01/abc/00001.mp4", digest_size=8).hexdigest()[:10]
    assert key == f"id01_abc_00001.mp4-{digest}"
    assert video_key("id01/abc/00001.mp4") == key                                   # stable
    paths = ["a/x.mp4", "b/x.mp4", "a/b/x.mp4", "a_b/x.mp4", "a b/x.mp4", "a_b_x.mp4", "/abs/a/x.mp4",
             "ü/x.mp4", "../x.mp4", ".hidden.mp4", "a/" + "long" * 80 + ".mp4"]
    keys = [video_key(p) for p in paths]
    assert len(set(keys)) == len(keys)                                               # unique
    for k in keys:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*-[0-9a-f]{10}", k), k       # filesystem-safe
        assert len(k) <= 111
    assert entry_path("/c", keys[0]).name == keys[0] + ".npz"
    assert entry_path("/c", keys[0]).parent.name == keys[0][-2:]


# ---------------------------------------------------------------------------------------------- settings

def test_settings_are_stored_and_checked(tmp_path):
    root = tmp_path / "c"
    cache = ClipCache.create(root, SETTINGS)
    assert cache.settings == SETTINGS
    assert json.loads((root / "cache.json").read_text())["settings"] == SETTINGS
    cache.check_settings(SETTINGS)
    nested = {k: v for k, v in SETTINGS.items() if "." not in k}
    nested["face"] = {k.split(".")[1]: v for k, v in SETTINGS.items() if k.startswith("face.")}
    nested["audio"] = {k.split(".")[1]: v for k, v in SETTINGS.items() if k.startswith("audio.")}
    cache.check_settings(nested)                                       # nested keys are the same keys

    other = dict(SETTINGS, fps=1.25, **{"face.margin": 1.0})
    with pytest.raises(ValueError, match=r"fps, face\.margin|face\.margin, fps") as err:
        cache.check_settings(other)
    assert "image_size" not in str(err.value)
    with pytest.raises(ValueError, match="face.margin"):
        ClipCache.create(root, other)                                  # re-opening with other settings
    with pytest.raises(ValueError, match="extra_key"):
        cache.check_settings(dict(SETTINGS, extra_key=1))
    with pytest.raises(ValueError, match="face.square"):
        cache.check_settings(dict(SETTINGS, **{"face.square": 0}))     # a bool is not an int


def test_settings_from_config():
    cfg = load_config(["configs/tiny.yaml"], ["data.face.detector=haar", "data.face.margin=1.5"])
    s = settings_from_config(cfg)
    assert s["num_frames"] == 4 and s["image_size"] == 32 and s["fps"] == 1.25 and s["clip_seconds"] == 3.2
    assert s["face.detector"] == "haar" and s["face.margin"] == 1.5 and s["audio.num_mel_bins"] == 32
    assert "audio.length_policy" not in s and "audio.norm_mean" not in s      # read-time choices


def test_open_requires_cache_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a clip cache"):
        ClipCache(tmp_path)


# ---------------------------------------------------------------------------------------------- index

def test_build_index_lists_clips_and_failures(cache_root):
    rows = [
        ManifestRow("real/a.mp4", 0, 0, 0, "id1", "RVRA", "train"),
        ManifestRow("fake/a.mp4", 1, 1, 0, "id2", "RVFA", "test"),
        ManifestRow("fake/broken.mp4", 1, 1, 1, "id3", "FVFA", "test"),
        ManifestRow("fake/pending.mp4", 1, 0, 1, "id3", "FVRA", "train"),
    ]
    write_video_entry(cache_root, video_key(rows[0].path), [payload(0, 0.0), payload(1, 3.2)],
                      {"duration": 7.0, "flags": []})
    write_video_entry(cache_root, video_key(rows[1].path), [payload(1, 3.2, audio=False)],
                      {"duration": 9.9, "flags": ["no_audio"],
                       "dropped": [{"clip": 0, "start_s": 0.0, "stage": "face", "reason": "no_face", "detail": "d"},
                                   {"clip": 2, "start_s": 6.4, "stage": "face", "reason": "no_face", "detail": "e"}]})
    write_failure_marker(cache_root, video_key(rows[2].path), rows[2].path, "probe", "unreadable", "garbage")
    summary = build_index(cache_root, rows)
    assert (summary.n_videos, summary.n_ok, summary.n_failed, summary.n_pending) == (4, 2, 1, 1)
    assert summary.n_clips == 3 and summary.n_clips_dropped == 2
    assert summary.seconds == pytest.approx(16.9) and summary.bytes > 0
    assert summary.failures == {("probe", "unreadable"): 1, ("face", "no_face"): 2}

    cache = ClipCache(cache_root)
    recs = cache.records()
    assert [(r.path, r.clip, r.start_s) for r in recs] == [("real/a.mp4", 0, 0.0), ("real/a.mp4", 1, 3.2),
                                                          ("fake/a.mp4", 1, 3.2)]
    r = recs[2]
    assert (r.label, r.audio_label, r.video_label, r.group, r.category, r.split) == (1, 1, 0, "id2", "RVFA", "test")
    assert r.has_audio is False and r.flags == "no_audio" and recs[0].has_audio is True
    assert [x.path for x in cache.records("train")] == ["real/a.mp4", "real/a.mp4"]
    assert cache.load_clip(recs[1]).frames.shape == (4, 32, 32, 3)
    with open(cache_root / "failures.csv", newline="") as f:
        fails = list(csv.DictReader(f))
    assert [tuple(x.values()) for x in fails] == [
        ("fake/a.mp4#clip0", "face", "no_face", "d"), ("fake/a.mp4#clip2", "face", "no_face", "e"),
        ("fake/broken.mp4", "probe", "unreadable", "garbage"),
    ]
    assert cache.failures() == fails

    # Labels come from the manifest given to the index, not from the entries.
    build_index(cache_root, [ManifestRow("real/a.mp4", 0, 0, 0, "id1", "RVRA", "val")])
    assert [r.split for r in ClipCache(cache_root).records()] == ["val", "val"]


def test_failure_marker_is_json_and_validates_stage(cache_root):
    p = write_failure_marker(cache_root, "k-0000000000", "x.mp4", "face", "no_face", "none", duration=np.float64(4.0))
    assert p == marker_path(cache_root, "k-0000000000")
    assert json.loads(p.read_text())["duration"] == 4.0
    with pytest.raises(ValueError, match="stage"):
        write_failure_marker(cache_root, "k-0000000000", "x.mp4", "crop", "no_face")
