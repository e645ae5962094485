"""Fusion, correlations, audits, the train-on-X-test-on-Y matrix, reports and store inputs, on hand-made values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from havic.analysis.audits import leading_silence_s, length_audit, silence_audit, trim_counts, trim_sequence
from havic.analysis.fusion import early_fusion, fusion_study, late_fusion, relative_gain, score_correlations
from havic.analysis.inputs import load_features, store_rows
from havic.analysis.protocols import MatrixRow, carve_val, matrix_columns, mean_ood, ssr_binary
from havic.analysis.reports import matrix_heatmap, matrix_markdown, square_heatmap
from havic.data.manifest import ManifestRow
from havic.features.records import FeatureSequence


def test_late_fusion_and_correlations_on_hand_made_scores():
    a = {"v1": 1.0, "v2": 2.0, "v3": 3.0, "v4": 4.0, "only_a": 9.0}
    b = {"v1": 2.0, "v2": 1.0, "v3": 4.0, "v4": 3.0}
    assert late_fusion(a, b) == {"v1": 1.5, "v2": 1.5, "v3": 3.5, "v4": 3.5}
    c = score_correlations(a, b)
    # x = 1..4, y = 2,1,4,3: Pearson = 0.6 by hand; ranks equal the values, so Spearman = 0.6;
    # pairs: 6, discordant (1,2) and (3,4): Kendall (4 - 2) / 6 = 1/3
    assert c["n"] == 4 and c["pearson"] == pytest.approx(0.6) and c["spearman"] == pytest.approx(0.6)
    assert c["kendall"] == pytest.approx(1 / 3)
    assert score_correlations({"a": 1.0, "b": 1.0}, {"a": 0.0, "b": 2.0})["pearson"] is None  # constant
    assert relative_gain(0.99, 0.704) == pytest.approx((0.99 - 0.704) / 0.704)


def test_fusion_study_matrices():
    labels = {"r1": 0, "r2": 0, "f1": 1, "f2": 1}
    scores = {"m1": {"r1": 0.0, "r2": 2.0, "f1": 1.0, "f2": 3.0},   # AUC 3/4
              "m2": {"r1": 0.0, "r2": -2.0, "f1": 1.0, "f2": 1.0}}  # AUC 1
    study = fusion_study(scores, labels)
    assert study["auc"] == {"m1": 0.75, "m2": 1.0}
    assert study["fused_auc"][0][1] == 1.0  # mean: r1 0, r2 0, f1 1, f2 2
    assert study["gain"][0][1] == pytest.approx(1 / 3) and study["gain"][1][0] == 0.0
    assert study["pearson"][0][0] == pytest.approx(1.0)


def test_early_fusion_concatenates_and_truncates():
    a, b = torch.ones(5, 2), 3 * torch.ones(3, 4)
    out = early_fusion(a, b)
    assert out.shape == (3, 6) and torch.equal(out[:, :2], torch.ones(3, 2))
    assert torch.allclose(early_fusion(a, b, normalize_parts=True)[:, 2:], torch.full((3, 4), 0.5))


def test_length_audit_on_a_hand_made_case():
    labels = [0, 0, 0, 1, 1, 1]
    durations = [5.0, 6.0, 9.0, 7.0, 8.0, 10.0]  # 7 of the 9 (fake, real) pairs have the fake longer
    out = length_audit(labels, durations, [int(25 * d) for d in durations])
    assert out["auc_duration"] == pytest.approx(7 / 9) and out["auc_frames"] == pytest.approx(7 / 9)
    assert length_audit([0, 1], [3.0, 3.0])["auc_duration"] == 0.5  # equal lengths carry nothing


def test_leading_silence_rule():
    wave = np.zeros(16000)
    wave[4000:] = 0.1  # first loud sample at 0.25 s
    assert leading_silence_s(wave, 16000) == 0.25
    assert trim_counts(0.25) == (7, 4480)  # floor(0.25 * 25) + 1 frames, 640 samples each
    assert trim_counts(0.0) == (1, 640)
    seq = FeatureSequence("x", torch.arange(20.0)[:, None], 25.0, "audio")
    cut = trim_sequence(seq, 7)
    assert cut.length == 13 and cut.values[0, 0] == 7 and cut.start_s == pytest.approx(0.28)
    seg = trim_sequence(FeatureSequence("s", torch.zeros(10, 1), 2.5, "video"), 7)  # 0.4 s steps: drop 0.0 only
    assert seg.length == 9
    out = silence_audit({"a": 0, "b": 1}, {"a": 0.0, "b": 1.0}, {"a": 1.0, "b": 0.0})
    assert (out["auc_full"], out["auc_trimmed"], out["auc_drop"]) == (1.0, 0.0, 1.0)


def test_ssr_binary_and_val_carving():
    rows = [ManifestRow("r", 0, 0, 0, split="train"), ManifestRow("rvfa", 1, 1, 0, split="train"),
            ManifestRow("fvra", 1, 0, 1, split="train"), ManifestRow("fvfa", 1, 1, 1, split="train")]
    assert [r.path for r in ssr_binary(rows)] == ["r", "fvfa"]
    many = [ManifestRow(f"v{i}", i % 2, split="train") for i in range(40)]
    carved = carve_val(many)
    assert sum(r.split == "val" for r in carved) == 4 and carve_val(carved) == carved


def test_matrix_layout_follows_table_2():
    cols = matrix_columns(["favc", "av1m"], ["favc", "av1m", "avlips"])
    assert [c[0] for c in cols] == ["A", "B", "C", "D", "E", "F"]
    assert cols[1] == ("B", "av1m", "favc")
    aucs = {("favc", "favc"): 1.0, ("av1m", "favc"): 0.9, ("av1m", "av1m"): 1.0, ("favc", "av1m"): 0.7,
            ("favc", "avlips"): 0.5, ("av1m", "avlips"): 0.6}
    assert mean_ood(aucs, cols) == pytest.approx((0.9 + 0.7 + 0.5 + 0.6) / 4)  # B, D, E, F
    assert matrix_columns(["x"], ["x", "y"]) == [("x->x", "x", "x"), ("x->y", "x", "y")]
    row = MatrixRow("havic/audio/12", "audio", {k: {"auc": v} for k, v in aucs.items()})
    twin = MatrixRow("havic/audio/12", "audio", {("favc", "favc"): {"auc": 0.99}}, baseline_of="havic/audio/12")
    table = matrix_markdown([row, twin], cols).splitlines()
    assert table[0] == ("| feature | mod. | A favc→favc | B av1m→favc | C av1m→av1m | D favc→av1m | E favc→avlips "
                        "| F av1m→avlips | mean OOD |")
    assert table[2] == "| havic/audio/12 | audio | 100.0 | 90.0 | 100.0 | 70.0 | 50.0 | 60.0 | 67.5 |"
    assert table[3].startswith("| havic/audio/12 (random init) | audio | 99.0 | — |")


def test_heatmaps_are_pngs(tmp_path):
    row = MatrixRow("f", "video", {("favc", "favc"): {"auc": 0.8}})
    png = matrix_heatmap([row], matrix_columns(["favc"], ["favc"]), tmp_path / "m.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert square_heatmap([[1.0, None], [None, 1.0]], ["a", "b"], tmp_path / "c.png", "r").stat().st_size > 0


def test_store_inputs_and_early_fusion_names(tmp_path):
    from havic.features.store import FeatureStore, StoredVideo

    store = FeatureStore.create(tmp_path / "store", {"extractor": "test"})
    videos = [StoredVideo("a.mp4", 0, "real", "train"), StoredVideo("b.mp4", 1, "fake", "test")]
    for i, v in enumerate(videos):
        store.write(v, [FeatureSequence("aud", torch.full((6 + i, 2), 1.0 + i), 25.0, "audio"),
                        FeatureSequence("vid", torch.full((5, 3), 2.0), 25.0, "video")], duration_s=0.2)
    store.build_index(videos)
    rows = store_rows(tmp_path / "store")
    assert [(r.path, r.label, r.split) for r in rows] == [("a.mp4", 0, "train"), ("b.mp4", 1, "test")]
    feats = load_features(tmp_path / "store", "aud")
    assert feats["b.mp4"].values.shape == (7, 2)
    fused = load_features(tmp_path / "store", "aud+vid")["a.mp4"]
    assert fused.values.shape == (5, 5) and fused.modality == "audio-visual"
    with pytest.raises(KeyError, match="no sequence 'other'"):
        load_features(tmp_path / "store", "other")
    assert math.isclose(float(fused.values[0, 0]), 1 / math.sqrt(2), rel_tol=1e-6)
