"""The demo pipeline: settings, the results table, and a reduced run of every stage end to end."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from havic.demo import DEMO_CONFIG, QUICK_CONFIG, Demo, DemoError, DemoSettings, format_table, load_settings


def test_settings_files_load_and_unknown_keys_fail():
    full = load_settings([DEMO_CONFIG])
    assert isinstance(full, DemoSettings)
    assert (full.pretrain_config, full.finetune_config) == ("configs/demo/pretrain.yaml", "configs/demo/finetune.yaml")
    quick = load_settings([DEMO_CONFIG, QUICK_CONFIG], ["seed=3"])
    assert quick.seed == 3 and quick.real_videos < full.real_videos and quick.duration_s == 3.2
    with pytest.raises(DemoError, match="real_vidoes"):
        load_settings([DEMO_CONFIG], ["real_vidoes=3"])
    with pytest.raises(DemoError, match="n_identities"):
        load_settings([DEMO_CONFIG], ["n_identities=2"])


def test_demo_configs_are_valid_training_configs():
    from havic.config import CONFIG_DIR, load_config

    pre = load_config([CONFIG_DIR / "demo" / "pretrain.yaml"])
    fine = load_config([CONFIG_DIR / "demo" / "finetune.yaml", CONFIG_DIR / "ablations" / "no_pretraining.yaml"])
    assert pre.train.stage == "pretrain" and fine.train.stage == "finetune" and fine.train.init_from is None
    assert pre.model == fine.model                     # the pretraining export fits the detector
    assert pre.model.variant == "paper" and pre.data.face.detector == "haar"


def _metrics(acc, ap, auc, n, n_pos):
    return {"acc": acc, "ap": ap, "auc": auc, "n": n, "n_pos": n_pos, "n_neg": n - n_pos, "note": ""}


def test_format_table_lays_out_methods_and_categories():
    ev = {
        "A": {"overall": _metrics(0.9, 0.95, 0.975, 4, 2),
              "groups": {"category": {"RVRA": _metrics(1.0, None, None, 2, 0), "FVFA": _metrics(0.5, 1.0, 1.0, 2, 2)}}},
        "w/o B": {"overall": _metrics(0.5, 0.5, 0.5, 4, 2),
                  "groups": {"category": {"RVRA": _metrics(0.0, None, None, 2, 0)}}},
    }
    lines = format_table(ev, ["RVRA", "FVFA"]).splitlines()
    assert "A" in lines[0] and "w/o B" in lines[0]
    assert lines[1].split() == ["set", "videos", "ACC", "AP", "AUC", "ACC", "AP", "AUC"]
    assert lines[3].split() == ["overall", "4", "90.0", "95.0", "97.5", "50.0", "50.0", "50.0"]
    assert lines[4].split() == ["RVRA", "2", "100.0", "—", "—", "0.0", "—", "—"]
    assert lines[5].split() == ["FVFA", "2", "50.0", "100.0", "100.0"]          # B has no FVFA row


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_quick_demo_runs_every_stage_and_writes_its_outputs(tmp_path, one_thread):
    lines: list[str] = []
    demo = Demo(load_settings([DEMO_CONFIG, QUICK_CONFIG]), tmp_path / "demo", echo=lines.append)
    table = demo.run()
    p = demo.paths
    # data and manifests
    assert len(list(p.pretrain_data.glob("real/*.mp4"))) == 6
    assert len(list(p.detect_data.glob("videos/*/*.mp4"))) == 14
    with open(p.test_manifest, newline="") as fh:
        test_rows = list(csv.DictReader(fh))
    assert test_rows and {r["split"] for r in test_rows} == {"test"}
    # caches
    for cache in (p.pretrain_cache, p.detect_cache):
        assert (cache / "index.csv").is_file() and (cache / "cache.json").is_file()
    # training exports and the pretraining previews
    pretrain_run = demo.outputs["pretrain_run"]
    assert (pretrain_run / "export" / "best.safetensors").is_file()
    assert list((pretrain_run / "previews").glob("step_*.png"))
    assert set(demo.outputs["detectors"]) == {"HAVIC", "w/o HCP"}
    for weights in demo.outputs["detectors"].values():
        assert weights.is_file()
    from havic.checkpoints import read_weights

    hcp = read_weights(demo.outputs["detectors"]["HAVIC"])
    assert hcp.kind == "detector" and hcp.config.train.init_from is not None
    assert read_weights(demo.outputs["detectors"]["w/o HCP"]).config.train.init_from is None
    # predictions: one row per test video, every one scored, with per-window plots
    for method in ("HAVIC", "w/o HCP"):
        out = p.scores_of(method)
        with open(out / "predictions.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert sorted(r["path"] for r in rows) == sorted(r["path"] for r in test_rows)
        assert all(r["error"] == "" and 0.0 <= float(r["score"]) <= 1.0 for r in rows)
        assert (out / "predictions.json").is_file()
    plots = p.scores_of("HAVIC") / "report"
    assert (plots / "index.html").is_file() and len(list(plots.glob("*.png"))) == len(test_rows)
    # evaluation and report
    metrics = json.loads((p.evaluation / "metrics.json").read_text())
    assert set(metrics["runs"]) == {"HAVIC", "w/o HCP"}
    assert (p.evaluation / "report.md").is_file()
    for name in ("report.md", "index.html", "summary.json", "results.txt"):
        assert (p.run_dir / name).is_file(), name
    summary = json.loads((p.run_dir / "summary.json").read_text())
    assert set(summary["timings_s"]) == {"data", "manifest", "preprocess", "pretrain", "finetune", "score",
                                         "evaluate", "report"}
    assert "overall" in table and "RVRA" in table and (p.run_dir / "results.txt").read_text() == table + "\n"
    # progress: every stage announced itself and the tool commands it ran
    assert sum(line.startswith("=== [") for line in lines) == 8
    assert any(line.startswith("$ python tools/train.py") for line in lines)
    assert any(line.startswith("$ python tools/infer.py") for line in lines)
    assert Path(p.run_dir / "report.md").read_text().count("reconstruction preview") >= 1
