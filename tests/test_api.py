"""The Python API (``import havic``): its doctests, scores against the scorer, features against the logits."""
from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import havic
import havic.api.detector
import havic.checkpoints.hub
from havic.checkpoints import save_weights
from havic.config import load_config
from havic.inference import VideoScorer, build_cropper
from havic.models import build_model
from tiny_detector import TINY, TINY_OVERRIDES, write_talking_video


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """``detector.safetensors`` (tiny, random weights, Haar faces) and ``talking.mp4`` (4.8 s): the doctests' files."""
    out = tmp_path_factory.mktemp("api")
    cfg = load_config([TINY], list(TINY_OVERRIDES))
    torch.manual_seed(0)
    save_weights(out / "detector.safetensors", build_model(cfg.model, "detector").state_dict(), cfg, "detector",
                 heads="trained")
    write_talking_video(out / "talking.mp4", 4.8)
    write_talking_video(out / "more" / "b.mp4", 3.6, audio=False)
    return out


@pytest.mark.parametrize("module", [havic.api.detector, havic.checkpoints.hub], ids=lambda m: m.__name__)
def test_docstring_examples_run(module, folder: Path, monkeypatch):
    monkeypatch.chdir(folder)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_score_equals_the_scorer_and_score_many_keeps_inputs_and_failures(folder: Path):
    det = havic.load_detector(folder / "detector.safetensors", hop_s=0.8, batch_size=3)
    assert det.config.infer.hop_s == 0.8 and det.scorer.batch_size == 3 and det.threshold == 0.5
    pred = det.score(folder / "talking.mp4", label=1)
    assert pred.label == 1 and pred.window_starts == [0.0, 0.8, 1.6]
    reference = VideoScorer(det.model, det.config, build_cropper(det.config)).score(folder / "talking.mp4")
    assert pred.window_logits == reference.window_logits and pred.score == reference.score
    preds = det.score_many([folder / "talking.mp4", folder / "more", folder / "absent.mp4"])
    assert [p.path for p in preds] == [str(folder / "talking.mp4"), str(folder / "more" / "b.mp4"),
                                       str(folder / "absent.mp4")]
    assert preds[0].window_logits == pred.window_logits
    assert "no_audio" in preds[1].flags and preds[1].error is None  # scored by the auxiliary video head
    assert preds[2].error == "not_found" and preds[2].score is None


def test_features_are_what_the_detector_classifies(folder: Path):
    det = havic.load_detector(folder / "detector.safetensors")
    feats = det.features(folder / "talking.mp4")
    model = det.model
    with torch.no_grad():
        v_agg = model.video_layer_weights(feats.taps("video"))
        a_agg = model.audio_layer_weights(feats.taps("audio"))
        joint = torch.cat([a_agg, v_agg, feats.features["audio.fusion"], feats.features["video.fusion"]], dim=1)
        logits = model.head(joint)
    torch.testing.assert_close(logits, torch.tensor(feats.window_logits), rtol=0, atol=1e-5)
    assert feats.window_starts == feats.prediction.window_starts == [0.0, 0.4, 0.8, 1.2, 1.6]

    silent = det.features(folder / "more" / "b.mp4")  # no audio: video features only
    assert silent.names == ["video.1", "video.2"]  # the fused streams need both modalities
    assert all(t.shape == (len(silent.window_starts), 32) for t in silent.features.values())
    with pytest.raises(KeyError, match="no audio features"):
        silent.taps("audio")
    failed = det.features(folder / "absent.mp4")
    assert failed.features == {} and failed.prediction.error == "not_found"


def test_import_havic_is_light_and_names_the_api():
    code = ("import sys, havic; assert 'torch' not in sys.modules; "
            "assert {'load_detector', 'Detector', 'VideoPrediction'} <= set(dir(havic)); "
            "havic.load_detector; assert 'torch' in sys.modules; print(havic.__version__)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == havic.__version__
    with pytest.raises(AttributeError, match="no attribute 'score'"):
        havic.score  # noqa: B018


def test_bad_weights_are_one_clear_error(tmp_path: Path):
    from havic.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match="no such weights file"):
        havic.load_detector(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="not a Hub id"):
        havic.load_detector("hf://just-a-name")
