"""Pretrainer -> detector: the backbone moves, the detection heads start fresh."""
from __future__ import annotations

import pytest
import torch

from havic import checkpoints as ck
from havic.models import build_model

from checkpoint_layouts import small


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_pretrain_to_detector_keeps_the_backbone(variant):
    cfg = small(variant)
    pretrainer = build_model(cfg.model, "pretrain")
    sd = ck.pretrain_to_detector(pretrainer.state_dict())
    assert sd and all(k.startswith(ck.BACKBONE_PREFIXES) for k in sd)
    detector = build_model(cfg.model, "detector")
    report = ck.load_with_report(detector, sd, expected_missing=ck.DETECTOR_HEAD_PATTERNS)
    assert set(report.loaded) == set(sd) and report.missing
    assert torch.equal(detector.fusion.video_cross.q.weight, pretrainer.fusion.video_cross.q.weight)
    with pytest.raises(ck.CheckpointError, match=r"unknown keys head\.layers\.0\.weight"):
        ck.pretrain_to_detector({**sd, "head.layers.0.weight": torch.zeros(1)})


def test_detector_from_pretrainer_keeps_the_backbone_and_seeds_the_heads():
    cfg = small("paper")
    pretrainer = build_model(cfg.model, "pretrain")
    detector, report = ck.detector_from_pretrainer(pretrainer.state_dict(), cfg)
    assert set(report.loaded) == set(ck.pretrain_to_detector(pretrainer.state_dict()))
    assert report.missing and not report.unexplained_missing  # pools, layer weights and heads stay fresh
    assert torch.equal(detector.audio_encoder.norm.weight, pretrainer.audio_encoder.norm.weight)
    again, _ = ck.detector_from_pretrainer(pretrainer.state_dict(), cfg)
    assert torch.equal(detector.head.layers[0].weight, again.head.layers[0].weight)  # from cfg.seed
