"""tools/evaluate.py and havic.evaluation: hand-made predictions against scikit-learn, groups, coverage,
runs over seeds, clip level on a tiny cache, and scoring a manifest's test split."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from havic import evaluation as ev
from havic.data.cache import ClipCache, ClipPayload, build_index, settings_from_config, video_key, write_video_entry
from havic.data.datasets import ClipDataset
from havic.data.manifest import ManifestRow, write_manifest
from havic.inference import VideoPrediction, load_detector, read_predictions
from havic.cli import evaluate as evaluate_cli

import tiny_detector as td

# path, label, category, method
VIDEOS = [(f"real/{i}.mp4", 0, "RVRA", "") for i in range(4)] + \
         [(f"fvfa/{i}.mp4", 1, "FVFA", "wav2lip" if i % 2 else "faceswap") for i in range(3)] + \
         [(f"rvfa/{i}.mp4", 1, "RVFA", "sv2tts") for i in range(3)]
SCORES = [0.1, 0.55, 0.3, 0.2, 0.9, 0.4, 0.8, 0.7, 0.35, 0.6]
FAILED = {"real/3.mp4": "unreadable", "rvfa/2.mp4": "no_face"}


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    path, _ = td.tiny_checkpoint(str(tmp_path_factory.getbasetemp()))
    return path


@pytest.fixture()
def manifest(tmp_path) -> Path:
    rows = [ManifestRow(p, y, y, y if c != "RVFA" else 0, f"id{i}", c, "test",
                        {"method": m}) for i, (p, y, c, m) in enumerate(VIDEOS)]
    return write_manifest(rows, tmp_path / "manifest.csv")


def write_predictions(path: Path, scores, failed=FAILED) -> Path:
    """Only path / score / error: labels and categories must come from the manifest."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "score", "error"])
        for (p, *_), s in zip(VIDEOS, scores):
            w.writerow([p, "" if p in failed else s, failed.get(p, "")])
    return path


def expected(scores, failed=FAILED):
    kept = [(y, s, c) for (p, y, c, _), s in zip(VIDEOS, scores) if p not in failed]
    y = np.array([k[0] for k in kept])
    s = np.array([k[1] for k in kept])
    c = np.array([k[2] for k in kept])
    return y, s, c


def run(argv, rc: int = 0) -> dict:
    assert evaluate_cli.main([str(a) for a in argv]) == rc
    out = Path(argv[argv.index("--out-dir") + 1])
    return json.loads((out / "metrics.json").read_text())


def test_predictions_with_manifest_match_sklearn(manifest, tmp_path, capsys):
    pred = write_predictions(tmp_path / "p.csv", SCORES)
    metrics = run(["--predictions", pred, "--manifest", manifest, "--by", "category", "method",
                   "--out-dir", tmp_path / "out"])
    result = metrics["runs"]["havic"][0]
    y, s, c = expected(SCORES)
    overall = result["overall"]
    assert overall["auc"] == pytest.approx(roc_auc_score(y, s))
    assert overall["ap"] == pytest.approx(average_precision_score(y, s))
    assert overall["acc"] == pytest.approx(np.mean((s >= 0.5) == y))
    assert (overall["n"], overall["n_pos"], overall["n_neg"]) == (8, 5, 3)
    assert result["coverage"] == {"n": 10, "n_scored": 8, "n_failed": 2,
                                  "failed_by_reason": {"unreadable": 1, "no_face": 1}}
    cats = result["groups"]["category"]
    for cat in ("FVFA", "RVFA"):
        pair = (c == cat) | (y == 0)
        assert cats[cat]["auc"] == pytest.approx(roc_auc_score(y[pair], s[pair]))
        assert cats[cat]["ap"] == pytest.approx(average_precision_score(y[pair], s[pair]))
        assert cats[cat]["acc"] == pytest.approx(np.mean(s[c == cat] >= 0.5))
        assert cats[cat]["n_ranked"] == int(pair.sum())
    assert cats["RVRA"]["auc"] is None and cats["RVRA"]["acc"] == pytest.approx(2 / 3)
    assert set(result["groups"]["method"]) == {"(none)", "faceswap", "wav2lip", "sv2tts"}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Coverage: scored 8 of 10 videos; failed 2 (unreadable 1, no_face 1)" in report
    assert "Video-level metrics" in report and "| category=FVFA | 3 | 3 | 0 |" in report
    assert "vs all 3 real(s)" in report and report in capsys.readouterr().out


def test_predictions_without_labels_say_so(tmp_path):
    pred = write_predictions(tmp_path / "p.csv", SCORES)
    result = run(["--predictions", pred, "--out-dir", tmp_path / "out"])["runs"]["havic"][0]
    assert result["overall"]["acc"] is None and "give a manifest" in result["overall"]["note"]
    assert result["n_unlabelled"] == 8


def test_runs_over_seeds_mean_and_sample_std(manifest, tmp_path):
    rng = np.random.default_rng(1)
    seeds = [np.clip(np.array(SCORES) + rng.normal(0, 0.15, len(SCORES)), 0, 1) for _ in range(3)]
    files = [write_predictions(tmp_path / f"seed{i}.csv", s) for i, s in enumerate(seeds)]
    metrics = run(["--predictions", *files, "--manifest", manifest, "--name", "ours", "--out-dir", tmp_path / "o"])
    summary = metrics["summary"]["ours"]
    assert summary["n_runs"] == 3
    aucs, fvfa = [], []
    for s in seeds:
        y, sc, c = expected(s)
        aucs.append(roc_auc_score(y, sc))
        pair = (c == "FVFA") | (y == 0)
        fvfa.append(roc_auc_score(y[pair], sc[pair]))
    assert summary["overall"]["auc"]["mean"] == pytest.approx(np.mean(aucs))
    assert summary["overall"]["auc"]["std"] == pytest.approx(np.std(aucs, ddof=1))
    assert summary["category=FVFA"]["auc"]["std"] == pytest.approx(np.std(fvfa, ddof=1))
    report = (tmp_path / "o" / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| ours | 3 |"))
    assert f"{100 * np.mean(aucs):.2f} ± {100 * np.std(aucs, ddof=1):.2f}" in row
    assert "sample standard deviation (ddof=1)" in report
    assert "| method | runs | overall ACC | overall AP | overall AUC | FVFA ACC | FVFA AP | FVFA AUC |" in report


def test_compare_methods_table(manifest, tmp_path):
    a = [write_predictions(tmp_path / f"a{i}.csv", np.array(SCORES) * (0.9 + 0.05 * i)) for i in range(2)]
    b = write_predictions(tmp_path / "b.csv", 1 - np.array(SCORES))
    argv = ["--compare", f"ours={a[0]},{a[1]}", "--compare", f"flipped={b}", "--manifest", manifest,
            "--out-dir", tmp_path / "o"]
    metrics = run(argv)
    assert metrics["summary"]["ours"]["n_runs"] == 2 and metrics["summary"]["flipped"]["n_runs"] == 1
    y, s, _ = expected(SCORES)
    assert metrics["summary"]["flipped"]["overall"]["auc"]["mean"] == pytest.approx(roc_auc_score(y, 1 - s))
    assert metrics["summary"]["flipped"]["overall"]["auc"]["std"] is None
    lines = (tmp_path / "o" / "report.md").read_text().splitlines()
    assert any(line.startswith("| ours | 2 |") for line in lines)
    assert any(line.startswith("| flipped | 1 |") for line in lines)


def test_join_manifest_keeps_own_values_and_counts_missing(manifest):
    from havic.data.manifest import read_manifest

    preds = [VideoPrediction("./fvfa/0.mp4", 0.9), VideoPrediction("real/0.mp4", 0.1, label=1, category="X"),
             VideoPrediction("elsewhere.mp4", 0.5)]
    joined, missing = ev.join_manifest(preds, read_manifest(manifest))
    assert missing == 1
    assert (joined[0].label, joined[0].category, joined[0].extra["method"]) == (1, "FVFA", "faceswap")
    assert (joined[1].label, joined[1].category) == (1, "X")
    assert joined[2].label is None


# ---------------------------------------------------------------------------------------------- clip level

CLIPS = {"a.mp4": (0, "RVRA", "val", 2, True), "b.mp4": (1, "FVFA", "val", 2, True),
         "c.mp4": (1, "RVFA", "val", 1, False), "d.mp4": (0, "RVRA", "train", 1, True)}


def build_cache(root: Path, cfg) -> Path:
    ClipCache.create(root, settings_from_config(cfg))
    rng = np.random.default_rng(0)
    for vi, (path, (label, cat, split, n, audio)) in enumerate(CLIPS.items()):
        clips = [ClipPayload(frames=rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8),
                             fbank=rng.normal(-7, 3, (318, 32)).astype(np.float32) if audio else None,
                             start_s=3.2 * k, frame_times=3.2 * k + 0.8 * np.arange(4),
                             boxes=np.tile(np.array([0, 0, 32, 32], np.float32), (4, 1)),
                             is_detected=np.ones(4, bool), clip=k) for k in range(n)]
        write_video_entry(root, video_key(path), clips, {"duration": 3.2 * n}, jpeg_quality=95)
    rows = [ManifestRow(p, y, 0, y, p, c, s) for p, (y, c, s, _, _) in CLIPS.items()]
    build_index(root, rows)
    return root


def test_clip_level_evaluation(tiny_weights, tmp_path):
    model, cfg = load_detector(tiny_weights)
    cache = build_cache(tmp_path / "cache", cfg)
    metrics = run(["--cache", cache, "--weights", tiny_weights, "--split", "val", "--out-dir", tmp_path / "o"])
    result = metrics["runs"]["havic (clip level)"][0]
    assert result["level"] == "clip" and result["overall"]["n"] == 5
    rows = read_predictions(tmp_path / "o" / "clip_predictions.csv")
    assert [r.path for r in rows] == ["a.mp4#clip0", "a.mp4#clip1", "b.mp4#clip0", "b.mp4#clip1", "c.mp4#clip0"]
    assert rows[-1].flags == ["no_audio"]
    # the same clips through the model by hand (audio-less clip -> video head)
    data = ClipDataset(ClipCache(cache), ClipCache(cache).records("val"), num_frames=4, image_size=32,
                       audio_frames=64, num_mel_bins=32, norm_mean=cfg.data.audio.norm_mean,
                       norm_std=cfg.data.audio.norm_std, require_audio=False)
    for r, i in zip(rows, range(len(data))):
        x = data[i]
        with torch.inference_mode():
            out = model(x["video"][None], x["audio"][None] if x["has_audio"] else None)
        assert r.logit == pytest.approx(out.logit.item(), abs=1e-5) and r.label == x["label"].item()
    y = np.array([r.label for r in rows])
    s = np.array([r.score for r in rows])
    assert result["overall"]["auc"] == pytest.approx(roc_auc_score(y, s))
    assert "Clip-level metrics" in (tmp_path / "o" / "report.md").read_text()


def test_clip_level_evaluation_in_bf16(tiny_weights, tmp_path, capsys):
    model, cfg = load_detector(tiny_weights)
    cache = build_cache(tmp_path / "cache", cfg)
    logits = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        run(["--cache", cache, "--weights", tiny_weights, "--split", "val", "--out-dir", out,
             "--precision", precision])
        logits[precision] = [r.logit for r in read_predictions(out / "clip_predictions.csv")]
    assert len(logits["bf16"]) == 5
    np.testing.assert_allclose(logits["bf16"], logits["fp32"], atol=0.05)
    assert logits["bf16"] != logits["fp32"]     # the bf16 path really ran
    capsys.readouterr()
    assert evaluate_cli.main(["--cache", str(cache), "--weights", str(tiny_weights), "--split", "val",
                              "--out-dir", str(tmp_path / "fp16"), "--precision", "fp16"]) == 2
    assert "fp16 needs a CUDA device" in capsys.readouterr().err


@pytest.mark.slow
def test_scores_the_manifest_test_split(tiny_weights, tmp_path):
    root = tmp_path / "data"
    td.write_talking_video(root / "real.mp4", 4.0)
    td.write_talking_video(root / "fake.mp4", 4.0, fake=True)
    td.write_talking_video(root / "train.mp4", 4.0)
    rows = [ManifestRow("real.mp4", 0, 0, 0, "a", "RVRA", "test"),
            ManifestRow("fake.mp4", 1, 0, 1, "b", "FVRA", "test"),
            ManifestRow("train.mp4", 0, 0, 0, "c", "RVRA", "train"),
            ManifestRow("gone.mp4", 1, 1, 1, "d", "FVFA", "test")]
    manifest = write_manifest(rows, tmp_path / "m.csv")
    metrics = run(["--manifest", manifest, "--weights", tiny_weights, "--root", root, "--out-dir", tmp_path / "o",
                   "--batch-size", "4"], rc=1)     # gone.mp4 failed: reported, and the exit code says so
    preds = {p.path: p for p in read_predictions(tmp_path / "o" / "predictions.csv")}
    assert set(preds) == {"real.mp4", "fake.mp4", "gone.mp4"}
    assert preds["gone.mp4"].error == "not_found" and preds["fake.mp4"].category == "FVRA"
    result = metrics["runs"]["havic"][0]
    assert result["coverage"]["n_scored"] == 2 and result["overall"]["n"] == 2
    assert result["overall"]["auc"] == pytest.approx(float(preds["fake.mp4"].score > preds["real.mp4"].score))
    # cross-dataset manifests have no splits: --split all scores every row
    run(["--manifest", manifest, "--weights", tiny_weights, "--root", root, "--out-dir", tmp_path / "all",
         "--batch-size", "4", "--split", "all"], rc=1)
    assert len(read_predictions(tmp_path / "all" / "predictions.csv")) == 4


def test_nothing_to_evaluate_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        evaluate_cli.main(["--out-dir", str(tmp_path)])
    (tmp_path / "empty.csv").write_text("path,score\n")
    assert evaluate_cli.main(["--predictions", str(tmp_path / "empty.csv"), "--out-dir", str(tmp_path / "o")]) == 2
    assert "nothing to evaluate in" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_without_out_dir_the_report_goes_under_runs(manifest, tmp_path, monkeypatch):
    pred = write_predictions(tmp_path / "p.csv", SCORES)
    monkeypatch.chdir(tmp_path)
    assert evaluate_cli.main(["--predictions", str(pred), "--manifest", str(manifest)]) == 0
    (out,) = (tmp_path / "runs").iterdir()
    assert out.name.startswith("evaluate-") and (out / "report.md").is_file() and (out / "metrics.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv", "p.csv", "runs"]
