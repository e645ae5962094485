"""``make analysis`` in its quick form: data, short pretraining, twin, features, probes and report end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from havic.cli import analysis_demo
from havic.demo import DemoError
from havic.demo.analysis import ROWS, format_auc_table, pretraining_export

STREAMS = [f"havic/{m}/{t}" for m in ("video", "audio") for t in (1, 2, 3, "fusion")]
FUSED = "havic/video/fusion+havic/audio/fusion"


def test_format_auc_table_rows_are_streams_columns_are_encoders():
    table = format_auc_table({"havic/video/3": {"pretrained": 0.875, "random init": 0.5},
                              "havic/audio/1": {"pretrained": None, "random init": 1.0}})
    assert table.splitlines() == ["| stream | pretrained AUC | random init AUC |", "|---|---:|---:|",
                                  "| havic/video/3 | 87.5 | 50.0 |", "| havic/audio/1 | — | 100.0 |"]


def test_pretraining_export_names_what_is_missing(tmp_path):
    with pytest.raises(DemoError, match="expected one pretraining run"):
        pretraining_export(tmp_path)
    export = tmp_path / "train" / "pretrain-1" / "export"
    export.mkdir(parents=True)
    with pytest.raises(DemoError, match="no export/best.safetensors"):
        pretraining_export(tmp_path)
    (export / "last.safetensors").write_bytes(b"")
    assert pretraining_export(tmp_path) == export / "last.safetensors"
    (export / "best.safetensors").write_bytes(b"")
    assert pretraining_export(tmp_path) == export / "best.safetensors"


def test_bad_demo_dir_is_refused(tmp_path, capsys):
    assert analysis_demo.main(["--demo-dir", str(tmp_path / "nope"), "--run-dir", str(tmp_path / "run")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _check_run(run: Path, out: str) -> dict:
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert list(summary["aucs"]) == [*STREAMS, FUSED]
    for stream, row in summary["aucs"].items():
        assert set(row) == set(ROWS), stream
        for auc in row.values():
            assert auc is None or 0.0 <= auc <= 1.0
    table = (run / "table.md").read_text(encoding="utf-8")
    assert table.strip() == summary["table"] and summary["table"] in out     # printed as written
    assert len(table.strip().splitlines()) == 2 + len(STREAMS) + 1
    page = (run / "index.html").read_text(encoding="utf-8")
    assert "<img src='auc.png'" in page and page.count("<tr>") == 1 + len(STREAMS) + 1
    assert (run / "auc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for folder in ROWS.values():       # every probe wrote its test metrics
        for stream in summary["aucs"]:
            metrics = json.loads((run / "probes" / folder / stream.replace("/", "_") / "metrics.json").read_text())
            assert metrics["test"]["n"] > 0
    return summary


def test_quick_analysis_end_to_end_then_reusing_its_run(tmp_path, capsys):
    from havic.checkpoints.files import read_weights

    first = tmp_path / "first"
    argv = ["--quick", "--max-epochs", "2", "--patience", "1"]
    assert analysis_demo.main([*argv, "--run-dir", str(first)]) == 0
    summary = _check_run(first, capsys.readouterr().out)
    assert summary["demo_dir"] is None and summary["settings"]["real_videos"] == 6

    # The twin: the pretraining export's configuration and keys, other values.
    pre, twin = (read_weights(summary["weights"][k]) for k in ("pretrained", "random init"))
    assert pre.kind == twin.kind == "pretrain" and pre.config == twin.config
    assert set(pre.state_dict) == set(twin.state_dict)
    assert any(not torch.equal(pre.state_dict[k], twin.state_dict[k]) for k in pre.state_dict)

    # The first run folder holds what a demo run holds: reuse it without generating or pretraining.
    second = tmp_path / "second"
    assert analysis_demo.main([*argv, "--demo-dir", str(first), "--run-dir", str(second)]) == 0
    again = _check_run(second, capsys.readouterr().out)
    assert again["demo_dir"] == str(first) and again["weights"]["pretrained"] == summary["weights"]["pretrained"]
    assert not (second / "data").exists() and not (second / "train").exists()


def test_analysis_settings_load_and_are_smaller_than_the_demo():
    from havic.demo import DEMO_CONFIG, load_settings
    from havic.demo.analysis import ANALYSIS_CONFIG

    full, reduced = load_settings([DEMO_CONFIG]), load_settings([DEMO_CONFIG, ANALYSIS_CONFIG])
    assert reduced.real_videos == full.real_videos and reduced.pretrain_videos < full.pretrain_videos
    assert any(o.startswith("train.trainer.max_epochs=") for o in reduced.pretrain_overrides)
