"""Dataset adapters on small trees that mirror the real layouts (quirks included), and the CLI."""
from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from havic.data.adapters import CROSS_MANIPULATION_HELD_OUT, build, cross_manipulation_folds
from havic.data.adapters.fakeavceleb import SUBCATEGORIES, TYPES
from havic.data.manifest import Manifest, read_manifest
from havic.data.video import write_video

REPO_ROOT = Path(__file__).resolve().parents[1]

# folder -> (audio_label, video_label, label): docs/official-differences.md#fakeavceleb-split-and-labels
FAVC_LABELS = {"RealVideo-RealAudio": (0, 0, 0), "RealVideo-FakeAudio": (1, 0, 1),
               "FakeVideo-RealAudio": (0, 1, 1), "FakeVideo-FakeAudio": (1, 1, 1)}
SHIPPED_HEADER = "source,target1,target2,method,category,type,race,gender,path,"
FIXED_HEADER = "source,target1,target2,method,category,type,race,gender,filename,path"


@pytest.fixture(scope="session")
def mp4_bytes(tmp_path_factory) -> bytes:
    """A real 4-frame 16x16 H.264/AAC mp4, written once and copied into every tree."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal(2560)).astype(np.float32)
    path = write_video(tmp_path_factory.mktemp("media") / "clip.mp4", frames, 25, audio=audio, sample_rate=16000)
    return path.read_bytes()


def put(root: Path, rel: str, data: bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def by_path(result) -> dict:
    return {r.path: r for r in result.manifest}


def skipped(result) -> dict[str, str]:
    return {s.path: s.reason for s in result.skipped}


def load_cli():
    spec = importlib.util.spec_from_file_location("build_manifest", REPO_ROOT / "tools" / "build_manifest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------
# FakeAVCeleb
# ----------------------------------------------------------------------------------------------

# (path relative to ROOT, method in meta_data.csv or None when not listed, expected category)
FAVC_FILES = [
    ("RealVideo-RealAudio/African/men/id00076/00109.mp4", "real", "RVRA"),
    ("RealVideo-RealAudio/Asian (East)/women/id00460/00005.mp4", "real", "RVRA"),
    ("RealVideo-RealAudio/Asian_South/men/id00002/00007.mp4", "real", "RVRA"),
    ("RealVideo-FakeAudio/African/men/id00076/00109_fake.mp4", "rtvc", "RVFA"),
    ("RealVideo-FakeAudio/Asian (East)/women/id00460/00005.mp4", "rtvc", "RVFA"),  # lacks _fake
    ("FakeVideo-RealAudio/African/men/id00076/00109_id00391_wavtolip.mp4", "wav2lip", "FVRA-WL"),
    ("FakeVideo-RealAudio/Asian (East)/women/id00460/00005.mp4", "faceswap", "FVRA-FS"),  # same name as RVRA
    ("FakeVideo-RealAudio/Asian_South/men/id00002/00007_id00391_Tj_J-UZaenWI.mp4", "fsgan", "FVRA-GAN"),
    ("FakeVideo-FakeAudio/African/men/id00076/00109_id00391_wavtolip.mp4", "wav2lip", "FVFA-WL"),  # same as FVRA
    ("FakeVideo-FakeAudio/Asian (East)/women/id00460/00005_id01637_5VjcPZm8knM_faceswap_id00476_wavtolip.mp4",
     "faceswap-wav2lip", "FVFA-FS"),
    ("FakeVideo-FakeAudio/Asian_South/men/id00002/00007_id00391_TjJgUZaenWI_id00476_wavtolip.mp4",
     "fsgan-wav2lip", "FVFA-GAN"),
    ("FakeVideo-FakeAudio/African/men/id00076/00109_10_id00476_wavtolip.mp4", "CONFLICT", "FVFA"),
    ("FakeVideo-FakeAudio/African/men/id00076/00200_id00001_wavtolip.mp4", None, "FVFA"),  # not in metadata
    ("FakeVideo-RealAudio/African/men/id00076/00300_0.mp4", "rtvc", "FVRA"),  # method impossible for folder
]


def meta_line(rel: str, method: str, header: str) -> str:
    type_, race, gender, ident, name = rel.split("/")
    letter = "ABCD"[list(TYPES).index(type_)]
    race = {"Asian_South": "Asian (South)"}.get(race, race)  # the metadata keeps the official spelling
    directory = f"FakeAVCeleb/{type_}/{race}/{gender}/{ident}"
    return f"{ident},id00391,-,{method},{letter},{type_},{race},{gender},{name},{directory}"


def write_meta(root: Path, files, header: str = SHIPPED_HEADER) -> Path:
    lines = [header]
    for rel, method, _ in files:
        if method == "CONFLICT":  # listed twice with different methods (22 such rows in v1.2)
            lines += [meta_line(rel, "wav2lip", header), meta_line(rel, "faceswap-wav2lip", header)]
        elif method is not None:
            lines.append(meta_line(rel, method, header))
    lines.append(lines[1])  # an exact duplicate row is merged
    lines.append(meta_line("FakeVideo-FakeAudio/African/men/id00076/gone.mp4", "wav2lip", header))  # not on disk
    lines.append("garbage,row")
    path = root / "meta_data.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def favc_root(tmp_path, mp4_bytes) -> Path:
    root = tmp_path / "FakeAVCeleb_v1.2"
    for rel, _, _ in FAVC_FILES:
        put(root, rel, mp4_bytes)
    put(root, "RealVideo-RealAudio/African/men/id00076/00109.txt", b"voxceleb info")  # sidecar
    put(root, "RealVideo-RealAudio/readme.txt", b"stray")
    put(root, "FakeVideo-RealAudio/African/stray.mp4", mp4_bytes)  # misplaced
    put(root, "FakeVideo-RealAudio/African/men/id00076/broken.mp4", b"")  # truncated download
    write_meta(root, FAVC_FILES)
    return root


@pytest.mark.parametrize("header", [SHIPPED_HEADER, FIXED_HEADER])
def test_fakeavceleb_labels_categories_and_quirks(favc_root, header, caplog):
    write_meta(favc_root, FAVC_FILES, header)
    result = build("fakeavceleb", favc_root)
    rows = by_path(result)
    assert set(rows) == {rel for rel, _, _ in FAVC_FILES}
    for rel, method, category in FAVC_FILES:
        row = rows[rel]
        assert (row.audio_label, row.video_label, row.label) == FAVC_LABELS[rel.split("/")[0]], rel
        assert row.category == category, rel
        assert row.group == row.extra["source"] == rel.split("/")[3]
        assert row.split == ""
    # Same (identity, file name) in two folders: each row gets its own folder's metadata.
    assert rows["RealVideo-RealAudio/Asian (East)/women/id00460/00005.mp4"].extra["method"] == "real"
    assert rows["FakeVideo-RealAudio/Asian (East)/women/id00460/00005.mp4"].extra["method"] == "faceswap"
    conflict = rows["FakeVideo-FakeAudio/African/men/id00076/00109_10_id00476_wavtolip.mp4"]
    assert conflict.extra["method"] == "faceswap-wav2lip|wav2lip"
    # Both race spellings map to the official one.
    assert rows["RealVideo-RealAudio/Asian_South/men/id00002/00007.mp4"].extra["race"] == "Asian (South)"
    assert rows["RealVideo-RealAudio/Asian (East)/women/id00460/00005.mp4"].extra["race"] == "Asian (East)"
    assert rows["FakeVideo-RealAudio/African/men/id00076/00109_id00391_wavtolip.mp4"].extra["target1"] == "id00391"
    assert skipped(result) == {
        "RealVideo-RealAudio/readme.txt": "not a video (.txt)",
        "FakeVideo-RealAudio/African/stray.mp4":
            "unexpected location (expected <Type>/<race>/<gender>/<id>/<file>.mp4)",
        "FakeVideo-RealAudio/African/men/id00076/broken.mp4": "empty file (0 bytes)",
    }
    assert result.ignored == {".txt sidecars next to a video": 1}
    text = caplog.text
    assert "conflicting methods" in text and "not in meta_data.csv" in text and "method not valid" in text
    assert "1 meta_data.csv entries name files that are not on disk" in text


def test_fakeavceleb_rows_point_at_decodable_files(favc_root):
    result = build("fakeavceleb", favc_root)
    row = by_path(result)["RealVideo-RealAudio/Asian (East)/women/id00460/00005.mp4"]
    with av.open(str(Manifest.resolve(row.path, favc_root))) as container:
        assert container.streams.video[0].codec_context.width == 16
        assert len(container.streams.audio) == 1


def test_fakeavceleb_without_metadata(favc_root):
    (favc_root / "meta_data.csv").unlink()
    rows = by_path(build("fakeavceleb", favc_root))
    cats = Counter(r.category for r in rows.values())
    assert cats == {"RVRA": 3, "RVFA": 2, "FVRA": 4, "FVFA": 5}
    assert rows["RealVideo-FakeAudio/African/men/id00076/00109_fake.mp4"].extra["method"] == "rtvc"
    with pytest.raises(FileNotFoundError, match="meta_data.csv not found"):
        build("fakeavceleb", favc_root, meta_csv=favc_root / "nope.csv")


def test_fakeavceleb_wrong_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="none of the FakeAVCeleb folders"):
        build("fakeavceleb", tmp_path)


def full_favc_tree(root: Path, data: bytes, n_ids: int = 20) -> None:
    """n_ids identities, each with one video per (folder, method) pair, plus metadata."""
    files = []
    races = ["African", "Asian (East)", "Asian_South", "Caucasian (American)", "Caucasian_European"]
    for i in range(n_ids):
        race, gender, ident = races[i % 5], ("men", "women")[i % 2], f"id{i:05d}"
        for (short, method), category in SUBCATEGORIES.items():
            type_ = next(t for t, v in TYPES.items() if v[0] == short)
            rel = f"{type_}/{race}/{gender}/{ident}/00001_{method}.mp4"
            put(root, rel, data)
            files.append((rel, method, category))
    write_meta(root, files)


def test_cross_manipulation_folds(tmp_path, mp4_bytes):
    root = tmp_path / "favc"
    full_favc_tree(root, mp4_bytes, n_ids=20)
    rows = build("fakeavceleb", root).manifest.rows
    base, folds = cross_manipulation_folds(rows, (0.7, 0.3), seed=0)
    assert tuple(folds) == CROSS_MANIPULATION_HELD_OUT
    base_test_reals = {r.path for r in base if r.split == "test" and r.label == 0}
    assert len(base_test_reals) == 6  # 30 % of 20 identities, one real each
    test_ids = {r.group for r in base if r.split == "test"}
    for held, fold in folds.items():
        assert {r.split for r in fold if r.category == held} == {"test"}
        assert {r.category for r in fold if r.split == "test"} == {"RVRA", held}
        assert {r.path for r in fold if r.split == "test" and r.label == 0} == base_test_reals
        assert sum(r.split == "test" and r.category == held for r in fold) == 6
        train_cats = {r.category for r in fold if r.split == "train"}
        assert train_cats == set(SUBCATEGORIES.values()) - {held}  # FVRA-FS / FVRA-GAN always trained on
        assert not {r.group for r in fold if r.split == "train"} & test_ids
    again, folds_again = cross_manipulation_folds(rows[::-1], (0.7, 0.3), seed=0)
    assert {r.path: r.split for r in again} == {r.path: r.split for r in base}
    assert {c: sorted(r.path for r in f) for c, f in folds_again.items()} == \
        {c: sorted(r.path for r in f) for c, f in folds.items()}


def test_cli_cross_manip_writes_folds_and_skipped(tmp_path, mp4_bytes, capsys):
    root = tmp_path / "favc"
    full_favc_tree(root, mp4_bytes, n_ids=10)
    put(root, "RealVideo-RealAudio/notes.json", b"{}")
    out = tmp_path / "out" / "favc.csv"
    assert load_cli().main(["fakeavceleb", str(root), "--out", str(out), "--split", "cross-manip", "--seed", "1"]) == 0
    base = read_manifest(out, root=root)
    assert len(base) == 80 and {r.split for r in base} == {"train", "test"}
    for held in CROSS_MANIPULATION_HELD_OUT:
        fold = read_manifest(out.with_name(f"favc.{held}.csv"), root=root)
        assert {r.split for r in fold if r.category == held} == {"test"}
    skipped_csv = out.with_name("favc.skipped.csv").read_text().splitlines()
    assert skipped_csv == ["path,reason", "RealVideo-RealAudio/notes.json,not a video (.json)"]
    printed = capsys.readouterr().out
    assert "fold FVFA-WL (held out)" in printed and "not a video (.json)" in printed and "total" in printed


def test_cli_paper_and_identity_splits_are_reproducible(tmp_path, mp4_bytes, capsys):
    root = tmp_path / "favc"
    full_favc_tree(root, mp4_bytes, n_ids=10)
    cli = load_cli()
    outs = []
    for name in ("a.csv", "b.csv"):
        cli.main(["fakeavceleb", str(root), "--out", str(tmp_path / name), "--split", "paper", "--seed", "4"])
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
    paper = read_manifest(tmp_path / "a.csv")
    assert Counter(r.split for r in paper) == {"train": 56, "test": 24}  # int(0.7 * 80)
    cli.main(["fakeavceleb", str(root), "--out", str(tmp_path / "id.csv"), "--split", "identity",
              "--fractions", "0.6", "0.1", "0.3", "--stratify", "gender"])
    ident = read_manifest(tmp_path / "id.csv")
    per_split = {s: {r.group for r in ident if r.split == s} for s in ("train", "val", "test")}
    assert [len(per_split[s]) for s in ("train", "val", "test")] == [6, 1, 3]
    assert sum(len(g) for g in per_split.values()) == len(set().union(*per_split.values())) == 10
    capsys.readouterr()
    assert cli.main(["generic", str(root), "--out", str(tmp_path / "x.csv"), "--split", "cross-manip"]) == 2
    assert "fakeavceleb only" in capsys.readouterr().err
    assert cli.main(["fakeavceleb", str(root), "--out", str(tmp_path / "x.csv"), "--subset-list", "l.txt"]) == 2
    assert "do not apply to fakeavceleb" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# LRS2 / LRS3
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def lrs2_root(tmp_path, mp4_bytes) -> Path:
    root = tmp_path / "mvlrs_v1"
    for rel in ["main/6001854301505575951/00001.mp4", "main/6001854301505575951/00002.mp4",
                "main/6002036013429565212/00001.mp4", "main/6003540929345286383/00004.mp4",
                "main/6009999999999999999/00009.mp4", "pretrain/5535415699068794046/00001.mp4"]:
        put(root, rel, mp4_bytes)
        put(root, rel.replace(".mp4", ".txt"), b"Text:  HELLO WORLD\nConf:  4\n")
    put(root, "main/6001854301505575951/notes.csv", b"a,b\n")
    (root / "train.txt").write_text("6001854301505575951/00001\n6001854301505575951/00002\n")
    (root / "val.txt").write_text("6002036013429565212/00001\n")
    (root / "test.txt").write_text("6003540929345286383/00004 NF\n6003540929345286383/00005 MV\n\n")
    (root / "pretrain.txt").write_text("5535415699068794046/00001\n")
    return root


def test_lrs2_official_split_from_lists(lrs2_root):
    result = build("lrs2", lrs2_root)
    rows = by_path(result)
    assert {p: r.split for p, r in rows.items()} == {
        "main/6001854301505575951/00001.mp4": "train", "main/6001854301505575951/00002.mp4": "train",
        "main/6002036013429565212/00001.mp4": "val", "main/6003540929345286383/00004.mp4": "test",
        "main/6009999999999999999/00009.mp4": "",  # in no list: kept, no split
        "pretrain/5535415699068794046/00001.mp4": "",
    }
    for p, r in rows.items():
        assert (r.label, r.audio_label, r.video_label, r.category) == (0, 0, 0, "real")
        assert r.group == p.split("/")[1] and r.extra["subset"] == p.split("/")[0]
    assert skipped(result) == {"main/6001854301505575951/notes.csv": "not a video (.csv)",
                               "main/6003540929345286383/00005.mp4": "listed in test.txt but missing on disk"}
    assert result.ignored == {"transcript .txt sidecars": 6}
    only_main = build("lrs2", lrs2_root, subsets=["main"])
    assert {r.extra["subset"] for r in only_main.manifest} == {"main"} and len(only_main.manifest) == 5
    with pytest.raises(ValueError, match="unknown LRS2 subsets"):
        build("lrs2", lrs2_root, subsets=["trainval"])


def test_lrs3_subsets(tmp_path, mp4_bytes):
    root = tmp_path / "lrs3"
    for rel in ["pretrain/0af00UcTOSc/00001.mp4", "trainval/0akiEFwtkyA/00002.mp4", "test/0Fi83BHQsMA/00003.mp4"]:
        put(root, rel, mp4_bytes)
    rows = by_path(build("lrs3", root))
    assert {p: (r.split, r.group) for p, r in rows.items()} == {
        "pretrain/0af00UcTOSc/00001.mp4": ("", "0af00UcTOSc"),
        "trainval/0akiEFwtkyA/00002.mp4": ("train", "0akiEFwtkyA"),
        "test/0Fi83BHQsMA/00003.mp4": ("test", "0Fi83BHQsMA")}


# ----------------------------------------------------------------------------------------------
# KoDF
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def kodf_root(tmp_path, mp4_bytes) -> Path:
    root = tmp_path / "KoDF"
    for rel in ["original_videos/subj_a/clip1.mp4", "original_videos/subj_a/clip2.mp4", "original_videos/solo.mp4",
                "synthesized_videos/dffs/subj_a/f1.mp4", "synthesized_videos/fsgan/subj_b/f2.mp4",
                "synthesized_videos/audio-driven/f3.mp4", "synthesized_videos/fo/subj_c/f4.mp4"]:
        put(root, rel, mp4_bytes)
    put(root, "synthesized_videos/dfl/readme.md", b"#")
    return root


def test_kodf_labels_methods_groups(kodf_root):
    result = build("kodf", kodf_root)
    rows = by_path(result)
    assert {p: (r.label, r.audio_label, r.video_label, r.category, r.extra["method"], r.group)
            for p, r in rows.items()} == {
        "original_videos/subj_a/clip1.mp4": (0, 0, 0, "real", "real", "subj_a"),
        "original_videos/subj_a/clip2.mp4": (0, 0, 0, "real", "real", "subj_a"),
        "original_videos/solo.mp4": (0, 0, 0, "real", "real", "solo"),
        "synthesized_videos/dffs/subj_a/f1.mp4": (1, 0, 1, "dffs", "dffs", "subj_a"),
        "synthesized_videos/fsgan/subj_b/f2.mp4": (1, 0, 1, "fsgan", "fsgan", "subj_b"),
        "synthesized_videos/audio-driven/f3.mp4": (1, 0, 1, "audio-driven", "audio-driven", "f3"),
        "synthesized_videos/fo/subj_c/f4.mp4": (1, 0, 1, "fo", "fo", "subj_c"),
    }
    assert skipped(result) == {"synthesized_videos/dfl/readme.md": "not a video (.md)"}


@pytest.mark.parametrize("kind", ["txt", "csv"])
def test_kodf_subset_list_restricts_rows(kodf_root, kind):
    wanted = ["original_videos/subj_a/clip1.mp4", "synthesized_videos/fsgan/subj_b/f2.mp4",
              "synthesized_videos/dfl/missing.mp4"]
    if kind == "txt":
        text = "# AVAD-style subset\n\n" + "\n".join(wanted[:1] + [str(kodf_root / wanted[1])] + wanted[2:]) + "\n"
    else:
        text = "path,note\n" + "\n".join(f"{w},x" for w in wanted) + "\n"
    subset = kodf_root.parent / f"subset.{kind}"
    subset.write_text(text)
    result = build("kodf", kodf_root, subset_list=subset)
    assert sorted(by_path(result)) == sorted(wanted[:2])
    assert skipped(result) == {"synthesized_videos/dfl/missing.mp4":
                               "listed in the subset list but not a video under the real/fake folders"}
    assert result.ignored["videos and files outside the subset list"] == 6


def test_kodf_face_track_layout_with_avi(tmp_path):
    root = tmp_path / "kodf_crops"
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    write_video(root / "real_set/pycrop/ref1/00000.avi", frames, 25)
    write_video(root / "fake_set/pycrop/ref2/00000.avi", frames, 25)
    rows = by_path(build("kodf", root))
    assert {p: (r.label, r.group, r.category) for p, r in rows.items()} == {
        "real_set/pycrop/ref1/00000.avi": (0, "ref1", "real"), "fake_set/pycrop/ref2/00000.avi": (1, "ref2", "fake")}


# ----------------------------------------------------------------------------------------------
# HiFi-AVDF
# ----------------------------------------------------------------------------------------------


def test_hifi_avdf_generators_pairs_and_csv(tmp_path, mp4_bytes):
    root = tmp_path / "HiFi-AVDF"
    for rel in ["veo3.1/a.mp4", "veo3.1/a_generated.mp4", "veo3.1/b.mp4", "veo3.1/b_generated.mp4",
                "kling2.5/c.mp4", "kling2.5/c_generated.mp4", "kling2.5/extra.mp4"]:
        put(root, rel, mp4_bytes)
    (root / "kling2.5.csv").write_text(
        "video_path,audio_label,visual_label,overall_label\n"
        "kling2.5/c.mp4,0,0,0\nc_generated.mp4,1,1,1\nkling2.5/gone_generated.mp4,1,1,1\n")
    (root / "README.md").write_text("card")
    result = build("hifi-avdf", root)
    rows = by_path(result)
    assert {p: (r.label, r.audio_label, r.video_label, r.category, r.group, r.extra["generator"])
            for p, r in rows.items()} == {
        "veo3.1/a.mp4": (0, 0, 0, "real", "veo3.1/a", "veo3.1"),
        "veo3.1/a_generated.mp4": (1, -1, -1, "veo3.1", "veo3.1/a", "veo3.1"),
        "veo3.1/b.mp4": (0, 0, 0, "real", "veo3.1/b", "veo3.1"),
        "veo3.1/b_generated.mp4": (1, -1, -1, "veo3.1", "veo3.1/b", "veo3.1"),
        "kling2.5/c.mp4": (0, 0, 0, "real", "kling2.5/c", "kling2.5"),
        "kling2.5/c_generated.mp4": (1, 1, 1, "kling2.5", "kling2.5/c", "kling2.5"),
    }
    assert skipped(result) == {"kling2.5/extra.mp4": "not listed in kling2.5.csv",
                               "kling2.5/gone_generated.mp4": "listed in kling2.5.csv but missing on disk"}
    (root / "kling2.5.csv").write_text("video_path,overall_label\nkling2.5/c.mp4,7\n")
    with pytest.raises(ValueError, match=r"kling2.5.csv: line 2, column 'overall_label'"):
        build("hifi-avdf", root)


# ----------------------------------------------------------------------------------------------
# Generic
# ----------------------------------------------------------------------------------------------


def test_generic_folders(tmp_path, mp4_bytes):
    root = tmp_path / "ds"
    for rel in ["real/r1.mp4", "real/spk/r2.mov", "fake/wav2lip/f1.mp4", "fake/f2.mp4"]:
        put(root, rel, mp4_bytes)
    put(root, "fake/.DS_Store", b"x")
    result = build("generic", root)
    assert {p: (r.label, r.audio_label, r.video_label, r.category, r.group) for p, r in by_path(result).items()} == {
        "real/r1.mp4": (0, 0, 0, "real", "real/r1.mp4"), "real/spk/r2.mov": (0, 0, 0, "real", "real/spk/r2.mov"),
        "fake/wav2lip/f1.mp4": (1, -1, -1, "wav2lip", "fake/wav2lip/f1.mp4"),
        "fake/f2.mp4": (1, -1, -1, "fake", "fake/f2.mp4")}
    assert skipped(result) == {"fake/.DS_Store": "hidden file"}
    with pytest.raises(FileNotFoundError, match="neither real/ nor fake/"):
        build("generic", tmp_path / "ds" / "real")


def test_generic_csv_accepts_the_havic_header(tmp_path, mp4_bytes):
    root = tmp_path / "ds"
    put(root, "x/a.mp4", mp4_bytes)
    put(root, "x/b.mp4", mp4_bytes)
    labels = tmp_path / "labels.csv"
    labels.write_text("video_path,overall_label,audio_label,visual_label,source\n"
                      f"x/a.mp4,1,1,0,web\n{root / 'x/b.mp4'},0,,,tv\nx/gone.mp4,1,,,web\n")
    result = build("generic", root, labels_csv=labels)
    assert result.manifest.rows == [
        result.manifest[0].__class__("x/a.mp4", 1, 1, 0, "x/a.mp4", "fake", "", {"source": "web"}),
        result.manifest[0].__class__("x/b.mp4", 0, 0, 0, "x/b.mp4", "real", "", {"source": "tv"}),
    ]
    assert skipped(result) == {"x/gone.mp4": "listed in labels.csv but missing on disk"}
    labels.write_text("path,label,split\nx/a.mp4,fake,train\n")
    with pytest.raises(ValueError, match=r"labels.csv: line 2, column 'label'"):
        build("generic", root, labels_csv=labels)
    labels.write_text("file,target\nx/a.mp4,1\n")
    with pytest.raises(ValueError, match="need a path"):
        build("generic", root, labels_csv=labels)


def test_build_rejects_unknown_dataset_and_foreign_options(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        build("dfdc", tmp_path)
    with pytest.raises(ValueError, match=r"\['meta_csv'\] do not apply to kodf"):
        build("kodf", tmp_path, meta_csv="m.csv", subset_list=None)
