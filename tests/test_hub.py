"""Hugging Face Hub: hf:// ids read offline from a local cache, and `havic export` folders a user uploads.

Nothing here touches the network: the cache is a folder in the layout huggingface_hub keeps
(``models--ORG--REPO/refs/main`` and ``snapshots/<commit>/<file>``), found through ``HF_HUB_CACHE``
with ``HF_HUB_OFFLINE=1``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from havic.checkpoints import read_weights, save_weights
from havic.checkpoints.hub import DEFAULT_FILENAME, HubError, HubId, download, parse_hub_id
from havic.config import load_config
from havic.model_card import export_model, metric_rows
from havic.models import build_model
from tiny_detector import TINY, TINY_OVERRIDES, write_talking_video

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def untrained_detector(path: Path) -> Path:
    """A tiny detector weights file (random weights, Haar faces): enough to load and score."""
    cfg = load_config([TINY], list(TINY_OVERRIDES))
    torch.manual_seed(0)
    return save_weights(path, build_model(cfg.model, "detector").state_dict(), cfg, "detector", heads="trained")


def cache_repo(cache: Path, repo_id: str, files: dict[str, Path], commit: str = COMMIT) -> Path:
    """Put `files` (name in the repository -> local file) into `cache` as huggingface_hub stores a download."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for name, src in files.items():
        dst = repo / "snapshots" / commit / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return repo / "snapshots" / commit


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch) -> Path:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def run_havic(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "havic", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def test_hub_ids_parse_and_malformed_ones_are_refused():
    assert parse_hub_id("hf://org/repo") == HubId("org/repo", DEFAULT_FILENAME, None)
    assert parse_hub_id("hf://org/repo/sub/dir/w.pth") == HubId("org/repo", "sub/dir/w.pth", None)
    assert parse_hub_id("hf://org/repo@v1.0/w.pth") == HubId("org/repo", "w.pth", "v1.0")
    assert str(parse_hub_id("hf://org/repo@v1.0")) == "hf://org/repo@v1.0/model.safetensors"
    for bad in ("hf://org", "hf://org/", "hf:///repo", "hf://org/repo/../x", "hf://org/repo//x", "org/repo"):
        with pytest.raises(HubError, match="expected hf://ORG/REPO"):
            parse_hub_id(bad)


def test_download_reads_the_cache_offline_and_names_what_is_missing(offline_cache: Path, tmp_path: Path):
    (tmp_path / "w.bin").write_bytes(b"weights")
    blob = tmp_path / "w.bin"
    snapshot = cache_repo(offline_cache, "org/repo", {DEFAULT_FILENAME: blob, "sub/x.pth": blob})
    assert download("hf://org/repo") == snapshot / DEFAULT_FILENAME
    assert download(f"hf://org/repo@{COMMIT}/sub/x.pth").read_bytes() == b"weights"
    with pytest.raises(HubError) as err:
        download("hf://org/repo/other.pth")
    message = str(err.value)
    assert message.startswith("hf://org/repo/other.pth: not in cache ") and "HF_HUB_OFFLINE is set" in message
    assert "\n" not in message and "hf download org/repo other.pth" in message
    with pytest.raises(HubError, match=r"^hf://org/absent/model.safetensors: not in cache"):
        download("hf://org/absent")


def test_load_detector_from_a_hub_id_equals_the_local_file(offline_cache: Path, tmp_path: Path):
    import havic

    local = untrained_detector(tmp_path / "d.safetensors")
    cache_repo(offline_cache, "org/tiny", {DEFAULT_FILENAME: local})
    from_hub, from_file = havic.load_detector("hf://org/tiny"), havic.load_detector(local)
    assert from_hub.source == "hf://org/tiny"
    hub_sd, file_sd = from_hub.model.state_dict(), from_file.model.state_dict()
    assert hub_sd.keys() == file_sd.keys() and all(torch.equal(hub_sd[k], file_sd[k]) for k in hub_sd)
    with pytest.raises(HubError, match="hf://org/none/model.safetensors: not in cache"):
        havic.load_detector("hf://org/none")


def test_infer_cli_scores_with_a_cached_hub_id_and_reports_a_missing_one_in_one_line(tmp_path: Path):
    cache = tmp_path / "hf-cache"
    cache_repo(cache, "org/tiny", {"weights/d.safetensors": untrained_detector(tmp_path / "d.safetensors")})
    video = write_talking_video(tmp_path / "v.mp4", 3.6)
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "p.csv"
    res = run_havic("infer", str(video), "--weights", "hf://org/tiny/weights/d.safetensors", "--out", str(out),
                    "--report-dir", str(tmp_path / "report"), "--no-progress", env=env)
    assert res.returncode == 0, res.stderr
    assert "scored 1 of 1 videos" in res.stdout and out.is_file()
    page = (tmp_path / "report" / "index.html").read_text()  # the picture in a row of its own, unscaled
    assert page.count('<tr class="picture">') == 1 and "img{max-width:100%" in page
    res = run_havic("infer", str(video), "--weights", "hf://org/missing", "--out", str(tmp_path / "q.csv"), env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        f"error: hf://org/missing/model.safetensors: not in cache {cache} and HF_HUB_OFFLINE is set; fetch it once "
        "with network access (`hf download org/missing model.safetensors`)"]


def _metrics_json(path: Path) -> Path:
    overall = {"acc": 0.75, "ap": 0.5, "auc": 0.25, "n": 8, "n_neg": 4, "n_pos": 4, "note": ""}
    real = {"acc": 1.0, "ap": None, "auc": None, "n": 4, "n_neg": 4, "n_pos": 0, "note": "real videos only"}
    evaluation = {"name": "p.csv", "level": "video", "description": "", "coverage": {"n": 8},
                  "overall": overall, "groups": {"category": {"RVRA": real}}, "n_unlabelled": 0, "threshold": 0.5}
    path.write_text(json.dumps({"runs": {"havic": [evaluation]}, "summary": {}}))
    return path


def test_export_cli_writes_an_uploadable_folder_with_a_model_card(offline_cache: Path, tmp_path: Path):
    run = tmp_path / "run"
    weights = untrained_detector(run / "export" / "best.safetensors")
    metrics = _metrics_json(tmp_path / "metrics.json")
    out = tmp_path / "release"
    res = run_havic("export", str(run), "--out", str(out), "--metrics", str(metrics), "--repo-id", "org/tiny")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.yaml", "metrics.json", "model.safetensors"]
    assert "nothing was uploaded; to publish: hf upload org/tiny" in res.stdout

    src, exported = read_weights(weights), read_weights(out / "model.safetensors")
    assert exported.kind == "detector" and exported.metadata["source"] == "run/export/best.safetensors"
    assert all(torch.equal(src.state_dict[k], exported.state_dict[k]) for k in src.state_dict)
    assert load_config([out / "config.yaml"]) == exported.config == src.config

    card = (out / "README.md").read_text()
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["license"] == "mit" and meta["library_name"] == "havic" and "deepfake-detection" in meta["tags"]
    assert "| havic | video | all | 8 | 75.00 | 50.00 | 25.00 |" in body
    assert "| havic | video | category=RVRA | 4 | 100.00 | — | — |" in body
    assert 'havic.load_detector("hf://org/tiny")' in body and "--weights hf://org/tiny" in body
    n_params = sum(t.numel() for t in src.state_dict.values())
    assert f"detector, variant `paper`, {n_params:,} parameters" in body

    # The folder is what the Hub serves: loaded back through the cache, it is the same detector.
    cache_repo(offline_cache, "org/tiny", {p.name: p for p in out.iterdir()})
    import havic

    det = havic.load_detector("hf://org/tiny")
    assert all(torch.equal(det.model.state_dict()[k], src.state_dict[k]) for k in src.state_dict)


def test_export_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path: Path):
    out = tmp_path / "release"
    not_json = tmp_path / "m.json"
    not_json.write_text("{oops")
    weights = untrained_detector(tmp_path / "d.safetensors")
    cases = [([str(tmp_path / "nope")], "no such file or folder"),
             ([str(tmp_path)], "a folder without export/best.safetensors or checkpoints/best.ckpt"),
             ([str(weights), "--metrics", str(not_json)], "not JSON"),
             ([str(weights), "--metrics", str(tmp_path / "absent.json")], "absent.json: cannot be read"),
             ([str(weights), "--repo-id", "just-a-name"], "expected ORG/REPO")]
    for args, reason in cases:
        res = run_havic("export", *args, "--out", str(out))
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and reason in lines[0], args
        assert not out.exists()


def test_metric_rows_accept_one_evaluation_and_refuse_other_json():
    rows = metric_rows({"name": "x", "level": "clip", "overall": {"acc": 0.5, "ap": 1.0, "auc": 1.0, "n": 4}})
    assert [(r.evaluation, r.level, r.group, r.n, r.acc) for r in rows] == [("x", "clip", "all", 4, 0.5)]
    with pytest.raises(ValueError, match="m.json: not a havic evaluation"):
        metric_rows({"predictions": []}, "m.json")


def test_export_of_pretraining_weights_says_how_to_fine_tune(tmp_path: Path):
    cfg = load_config([TINY])
    path = save_weights(tmp_path / "pt.safetensors", build_model(cfg.model, "pretrain").state_dict(), cfg, "pretrain")
    files = export_model(path, tmp_path / "out", repo_id="org/pt")
    card = files["card"].read_text()
    assert "# org/pt" in card and "no detection heads" in card
    assert "train.init_from=checkpoints/model.safetensors" in card and "havic infer" not in card
    assert read_weights(files["weights"]).kind == "pretrain"
