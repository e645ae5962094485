"""The feature store: round trip, refusal of other settings, resuming after a real SIGKILL, workers, the CLI."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from havic.cli.extract_features import main
from havic.features.records import FeatureSequence
from havic.features.store import FeatureStore, StoredVideo
from tiny_features import noise_video, save_clip

REPO = Path(__file__).resolve().parents[1]


def test_round_trip_and_index(tmp_path):
    store = FeatureStore.create(tmp_path / "s", {"extractor": "x", "rate_hz": 25.0, "store_dtype": "float32"})
    v = StoredVideo("a/b.mp4", 1, "FVFA", "test")
    seqs = [FeatureSequence("x/last", torch.randn(7, 3), 25.0, "video", 0.0, {"k": 1}),
            FeatureSequence("x/audio", torch.randn(4, 2), 12.5, "audio", 0.5)]
    store.write(v, seqs, 0.28)
    store.write_failure(StoredVideo("c.mp4"), "no_audio", "none")
    assert store.build_index([v, StoredVideo("c.mp4"), StoredVideo("missing.mp4")]) == (1, 1)
    back = {s.name: s for s in FeatureStore(tmp_path / "s").read("a/b.mp4")}
    for s in seqs:
        assert torch.equal(back[s.name].values, s.values)
        assert (back[s.name].rate_hz, back[s.name].modality, back[s.name].start_s) == (s.rate_hz, s.modality, s.start_s)
    assert back["x/last"].meta == {"k": 1}
    (row,) = store.index()
    assert (row["path"], row["label"], row["split"], row["names"], row["lengths"]) == \
        ("a/b.mp4", "1", "test", "x/last;x/audio", "7;4")
    assert store.failures() == [{"item": "c.mp4", "reason": "no_audio", "detail": "none"}]


def test_refuses_other_settings(tmp_path):
    FeatureStore.create(tmp_path, {"extractor": "clip", "fingerprint": "aa", "rate_hz": 25.0})
    FeatureStore.create(tmp_path, {"extractor": "clip", "fingerprint": "aa", "rate_hz": 25.0})   # same: fine
    with pytest.raises(ValueError, match=r"other settings \(fingerprint, rate_hz\)"):
        FeatureStore.create(tmp_path, {"extractor": "clip", "fingerprint": "bb", "rate_hz": 12.5})


@pytest.fixture(scope="module")
def clip_job(tmp_path_factory):
    folder = tmp_path_factory.mktemp("job")
    videos = [noise_video(folder / f"v{i}.mp4", 60, seed=i) for i in range(6)]
    return save_clip(folder / "clip"), videos


def _entries(root: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (root / "videos").rglob("*.safetensors")}


def test_cli_refuses_a_store_with_other_settings(tmp_path, clip_job, capsys):
    model, videos = clip_job
    out = tmp_path / "store"
    assert main(["clip", str(model), str(videos[0]), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert main(["clip", str(model), str(videos[0]), "--out", str(out), "--device", "cpu", "--no-progress",
                 "--store-dtype", "float16"]) == 2
    assert "store_dtype" in capsys.readouterr().err
    assert main(["clip", str(tmp_path / "nowhere"), str(videos[0]), "--out", str(out), "--device", "cpu"]) == 2


def test_resume_after_sigkill(tmp_path, clip_job):
    model, videos = clip_job
    out, clean = tmp_path / "killed", tmp_path / "clean"
    cmd = [sys.executable, str(REPO / "tools" / "extract_features.py"), "clip", str(model), *map(str, videos),
           "--out", str(out), "--device", "cpu", "--batch-size", "4", "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "videos").is_dir() or not any((out / "videos").rglob("*.safetensors")):
            assert proc.poll() is None and time.monotonic() < deadline, "the extraction ended before any entry"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = _entries(out)
    assert 1 <= len(before) < len(videos), f"{len(before)} entries at the kill: nothing left to resume"
    assert not (out / "index.csv").exists()
    assert main(["clip", str(model), *map(str, videos), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    after = _entries(out)
    assert len(after) == len(videos)
    assert all(after[name] == before[name] for name in before)          # finished entries untouched
    assert main(["clip", str(model), *map(str, videos), "--out", str(clean), "--device", "cpu", "--no-progress"]) == 0
    store, ref = FeatureStore(out), FeatureStore(clean)
    assert set(after) == set(_entries(clean))
    for v in videos:
        (a,), (b,) = store.read(str(v)), ref.read(str(v))
        torch.testing.assert_close(a.values, b.values)
    assert [r["path"] for r in store.index()] == [str(v) for v in videos] == [r["path"] for r in ref.index()]
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]    # no temporary file left behind


@pytest.mark.slow
def test_workers_write_the_same_store(tmp_path, clip_job):
    """This process and a spawned worker share the videos; the store equals a one-process store."""
    model, videos = clip_job
    args = ["clip", str(model), *map(str, videos), "--device", "cpu", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert main([*args, "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    one, two = FeatureStore(tmp_path / "one"), FeatureStore(tmp_path / "two")
    assert set(_entries(tmp_path / "one")) == set(_entries(tmp_path / "two"))
    assert one.index() == two.index()
    for v in videos:
        (a,), (b,) = one.read(str(v)), two.read(str(v))
        torch.testing.assert_close(a.values, b.values)
