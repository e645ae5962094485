"""AV-Deepfake1M and AVLips adapters on small trees, split lists, the fake_segments column, and the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from havic.cli.build_manifest import main as build_manifest_main
from havic.data.adapters import build
from havic.data.manifest import ManifestError, ManifestRow, fake_segments, read_manifest, validate


def put(root: Path, rel: str, data: bytes = b"\x00mp4") -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(data)


def entry(file: str, audio: list, visual: list, kind: str, frames: int = 200) -> dict:
    return {"file": file, "original": None, "split": "x", "modify_type": kind, "audio_model": "",
            "fake_segments": audio + visual, "audio_fake_segments": audio, "visual_fake_segments": visual,
            "video_frames": frames, "audio_frames": frames * 640}


@pytest.fixture
def av1m_root(tmp_path) -> Path:
    root = tmp_path / "av1m"
    train = [entry("id001/yt1/00001/real.mp4", [], [], "real"),
             entry("id001/yt1/00001/fake_video_fake_audio.mp4", [[1.2, 1.6]], [[1.2, 1.6]], "both_modified"),
             entry("id002/yt9/00003/real_video_fake_audio.mp4", [[0.5, 0.9]], [], "audio_modified"),
             entry("id002/yt9/00003/gone.mp4", [], [], "real")]  # listed, not on disk
    val = [entry("id003/yt2/00007/fake_video_real_audio.mp4", [], [[2.0, 2.4]], "visual_modified"),
           {"file": "id003/yt2/00007/real.mp4", "modify_type": "real", "video_frames": 150}]  # no segment lists
    for name, items in (("train", train), ("val", val)):
        (root / f"{name}_metadata.json").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{name}_metadata.json").write_text(json.dumps(items))
        for it in items:
            if "gone" not in it["file"]:
                put(root, f"{name}/{it['file']}")
    (root / "test_files.txt").write_text("id9/a/1/x.mp4\nid9/a/2/y.mp4\n")
    return root


def test_av1m_labels_segments_and_official_splits(av1m_root):
    res = build("av1m", av1m_root)
    rows = {r.path: r for r in res.manifest}
    both = rows["train/id001/yt1/00001/fake_video_fake_audio.mp4"]
    assert (both.label, both.audio_label, both.video_label, both.category) == (1, 1, 1, "FVFA")
    assert fake_segments(both) == [(1.2, 1.6), (1.2, 1.6)] and both.group == "id001" and both.split == "train"
    rvfa = rows["train/id002/yt9/00003/real_video_fake_audio.mp4"]
    assert (rvfa.label, rvfa.audio_label, rvfa.video_label, rvfa.category) == (1, 1, 0, "RVFA")
    fvra = rows["val/id003/yt2/00007/fake_video_real_audio.mp4"]
    assert (fvra.category, fvra.split, fvra.extra["video_frames"]) == ("FVRA", "test", "200")  # official val = test
    real = rows["val/id003/yt2/00007/real.mp4"]  # labels from modify_type when the lists are absent
    assert (real.label, real.audio_label, real.video_label, real.category) == (0, 0, 0, "RVRA")
    assert fake_segments(real) == []
    assert [(s.path, s.reason) for s in res.skipped] == [("train/id002/yt9/00003/gone.mp4",
                                                          "listed in train_metadata.json but missing")]
    assert res.ignored["official test videos (labels withheld)"] == 2


def test_av1m_per_file_metadata_layout_gives_the_same_rows(av1m_root):
    """The SDK's ``<split>_metadata/<path>.json`` layout: one dict per video, found by its path."""
    listed = {r.path: r for r in build("av1m", av1m_root).manifest}
    for name in ("train", "val"):
        single = av1m_root / f"{name}_metadata.json"
        for k, item in enumerate(json.loads(single.read_text())):
            per_file = av1m_root / f"{name}_metadata" / Path(item["file"]).with_suffix(".json")
            per_file.parent.mkdir(parents=True, exist_ok=True)
            per_file.write_text(json.dumps({key: v for key, v in item.items() if key != "file" or k % 2}))
        single.unlink()
    res = build("av1m", av1m_root)
    assert {r.path: r for r in res.manifest} == listed
    assert [(s.path, s.reason) for s in res.skipped] == [("train/id002/yt9/00003/gone.mp4",
                                                          "listed in train_metadata/ but missing")]
    (av1m_root / "val_metadata" / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="bad.json: expected one video's metadata"):
        build("av1m", av1m_root)


def test_av1m_split_csvs_keep_the_listed_videos(av1m_root, tmp_path):
    (tmp_path / "train.csv").write_text("path,label\n/data/AV1M/train/id001/yt1/00001/real.npz,0\n"
                                        "train/id002/yt9/00003/real_video_fake_audio.mp4,1\n")
    (tmp_path / "test.csv").write_text("path,label\nval/id003/yt2/00007/real.mp4,0\nval/id777/q/1/real.mp4,0\n")
    res = build("av1m", av1m_root, split_csv=[f"train={tmp_path / 'train.csv'}", f"test={tmp_path / 'test.csv'}"])
    assert {r.path: r.split for r in res.manifest} == {"train/id001/yt1/00001/real.mp4": "train",
                                                       "train/id002/yt9/00003/real_video_fake_audio.mp4": "train",
                                                       "val/id003/yt2/00007/real.mp4": "test"}
    assert ("id777/q/1/real", "listed in test.csv but not in the metadata") in [(s.path, s.reason) for s in res.skipped]
    with pytest.raises(ValueError, match="SPLIT=CSV"):
        build("av1m", av1m_root, split_csv=["holdout=x.csv"])


def test_avlips_labels_and_test_split(tmp_path):
    root = tmp_path / "AVLips"
    for rel in ("0_real/0.mp4", "0_real/1.mp4", "1_fake/0.mp4", "wav/0_real/0.wav", "1_fake/notes.txt"):
        put(root, rel)
    res = build("avlips", root)
    rows = {r.path: (r.label, r.audio_label, r.video_label, r.category, r.split) for r in res.manifest}
    assert rows == {"0_real/0.mp4": (0, 0, 0, "real", "test"), "0_real/1.mp4": (0, 0, 0, "real", "test"),
                    "1_fake/0.mp4": (1, 0, 1, "lipsync", "test")}
    assert [s.path for s in res.skipped] == ["1_fake/notes.txt"]
    with pytest.raises(FileNotFoundError, match="0_real"):
        build("avlips", tmp_path)


def test_fake_segments_column_is_checked_and_optional():
    validate([ManifestRow("a.mp4", 0)])  # old manifests: no such column
    validate([ManifestRow("a.mp4", 1, extra={"fake_segments": "[[0.2, 0.4]]"})])
    with pytest.raises(ManifestError, match="fake_segments"):
        validate([ManifestRow("a.mp4", 1, extra={"fake_segments": "[[0.4, 0.2]]"})])
    with pytest.raises(ManifestError, match="JSON list"):
        validate([ManifestRow("a.mp4", 1, extra={"fake_segments": "0.2-0.4"})])


def test_build_manifest_cli_writes_av1m_with_its_segments(av1m_root, tmp_path, capsys):
    out = tmp_path / "av1m.csv"
    assert build_manifest_main(["av1m", str(av1m_root), "--out", str(out)]) == 0
    manifest = read_manifest(out, root=av1m_root)
    assert len(manifest) == 5 and "fake_segments" in manifest.extra_columns
    assert build_manifest_main(["av1m", str(av1m_root), "--out", str(out), "--meta-csv", "m.csv"]) == 2
    assert "do not apply to av1m" in capsys.readouterr().err
