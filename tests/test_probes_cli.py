"""`havic probe` end to end on tiny feature stores: train, evaluate, SSR-DFD's probe, fuse, matrix, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from havic.cli.probe import main
from havic.features.records import FeatureSequence
from havic.features.store import FeatureStore, StoredVideo

FAST = ["--lr", "0.05", "--max-epochs", "20", "--patience", "5", "--batch-size", "2"]


def make_store(root: Path, seed: int, n: int = 24) -> Path:
    """Real/fake videos of 4-12 frames; fakes have a few frames pushed along one direction, in both features."""
    g = torch.Generator().manual_seed(seed)
    store = FeatureStore.create(root, {"extractor": "test"})
    videos = []
    for i in range(n):
        split = "train" if i < n // 2 else "val" if i < 3 * n // 4 else "test"
        v = StoredVideo(f"v{i}.mp4", i % 2, "FVFA" if i % 2 else "RVRA", split)
        t = int(torch.randint(4, 13, (1,), generator=g))
        a, b = torch.randn(t, 6, generator=g), torch.randn(t, 4, generator=g)
        if i % 2:
            a[:3, 0] += 8.0
            b[:3, 1] += 8.0
        store.write(v, [FeatureSequence("aud", a, 25.0, "audio"), FeatureSequence("vid", b, 25.0, "video")],
                    duration_s=t / 25)
        videos.append(v)
    store.build_index(videos)
    return root


def test_train_evaluate_fuse(tmp_path, capsys):
    store = make_store(tmp_path / "store", 0)
    assert main(["train", str(store), "--feature", "aud", "--out", str(tmp_path / "aud"), *FAST]) == 0
    metrics = json.loads((tmp_path / "aud" / "metrics.json").read_text())
    assert metrics["test"]["auc"] == 1.0 and metrics["length_audit"]["n"] == 6
    assert main(["train", str(store), "--feature", "vid", "--out", str(tmp_path / "vid"), *FAST]) == 0
    # evaluating the exported probe gives the scores training wrote
    assert main(["evaluate", str(store), "--probe", str(tmp_path / "aud" / "probe.safetensors"), "--feature", "aud",
                 "--out", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "scores.csv").read_text() == (tmp_path / "aud" / "scores.csv").read_text()
    assert main(["fuse", str(tmp_path / "aud" / "scores.csv"), str(tmp_path / "vid" / "scores.csv"),
                 "--out", str(tmp_path / "fuse")]) == 0
    study = json.loads((tmp_path / "fuse" / "metrics.json").read_text())
    assert study["models"] == ["aud", "vid"] and study["fused_auc"][0][1] == 1.0
    assert (tmp_path / "fuse" / "correlation.png").is_file() and "| aud |" in (tmp_path / "fuse" / "fusion.md").read_text()


def test_matrix_with_random_init_rows(tmp_path):
    favc, av1m = make_store(tmp_path / "favc", 1), make_store(tmp_path / "av1m", 2)
    twin = make_store(tmp_path / "rnd", 3)
    out = tmp_path / "matrix"
    assert main(["matrix", "--dataset", f"favc={favc}", f"av1m={av1m}", "--random-init", f"favc={twin}",
                 f"av1m={twin}", "--train-on", "favc", "--feature", "aud", "--out", str(out), *FAST]) == 0
    table = (out / "matrix.md").read_text().splitlines()
    assert table[0] == "| feature | mod. | A favc→favc | D favc→av1m | mean OOD |"
    assert table[2].startswith("| aud |") and table[3].startswith("| aud (random init) |")
    assert (out / "matrix.png").is_file() and (out / "scores" / "aud" / "favc-av1m.csv").is_file()


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    store = make_store(tmp_path / "store", 0, n=8)
    assert main(["train", str(store), "--feature", "nope", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no sequence 'nope'" in err and len(err.strip().splitlines()) == 1
    assert main(["train", str(store), "--feature", "aud", "--ssr-binary", "--out", str(tmp_path / "o")]) == 2
    assert "needs the manifest" in capsys.readouterr().err
    assert main(["matrix", "--dataset", "favc", "--train-on", "favc", "--feature", "aud"]) == 2
    assert "NAME=STORE" in capsys.readouterr().err


def test_evaluate_the_released_probe_checks_the_dimension(assets_dir, tmp_path, capsys):
    store = make_store(tmp_path / "store", 0, n=8)
    ckpt = assets_dir / "ssr-dfd" / "wav2vec2_probe_epoch48.ckpt"
    assert main(["evaluate", str(store), "--probe", str(ckpt), "--feature", "aud", "--out", str(tmp_path / "o")]) == 2
    assert "reads 3840-d features" in capsys.readouterr().err


def test_silence_audit_cuts_the_rows_of_the_leading_silence(tmp_path, capsys):
    """Fakes start with 0.2 s of silence and carry their signal in rows 0-2 (25 Hz): trimming
    floor(0.2 x 25) + 1 = 6 rows removes it, so the AUC falls from 1 to what is left."""
    import numpy as np
    from scipy.io import wavfile

    store = make_store(tmp_path / "store", 0)
    media = tmp_path / "media"
    media.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        wav = rng.uniform(-0.5, 0.5, 16000).astype(np.float32)
        if i % 2:
            wav[:3200] = 0.0
        wavfile.write(media / f"v{i}.mp4", 16000, wav)   # a WAV named as the store names it
    assert main(["train", str(store), "--feature", "aud", "--out", str(tmp_path / "aud"), *FAST]) == 0
    assert main(["silence-audit", str(store), "--probe", str(tmp_path / "aud" / "probe.safetensors"),
                 "--feature", "aud", "--root", str(media), "--out", str(tmp_path / "audit")]) == 0
    audit = json.loads((tmp_path / "audit" / "metrics.json").read_text())
    full = {r[0]: r for r in (line.split(",") for line in (tmp_path / "audit" / "scores.csv").read_text().splitlines())}
    trimmed = {r[0]: r for r in (line.split(",") for line in
                                 (tmp_path / "audit" / "scores_trimmed.csv").read_text().splitlines())}
    assert full["video_id"][-1] == "leading_silence_s" and len(full) == 7          # the 6 test videos v18-v23
    for i in range(18, 24):
        v = f"v{i}.mp4"
        assert full[v][-1] == ("0.2000" if i % 2 else "0.0000")
        cut = 6 if i % 2 else 1            # floor(silence x 25) + 1 rows
        assert int(trimmed[v][4]) == int(full[v][4]) - cut if v in trimmed else int(full[v][4]) <= cut
    assert audit["auc_full"] == 1.0 and audit["n"] == len(trimmed) - 1
    assert audit["auc_trimmed"] is None or audit["auc_drop"] > 0.2
    capsys.readouterr()
    assert main(["silence-audit", str(store), "--probe", str(tmp_path / "aud" / "probe.safetensors"),
                 "--feature", "aud", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "bad")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
