"""The paper-size networks: exact parameter counts and one forward (and backward) pass each.

Expected counts: docs/official-differences.md#parameter-counts gives the official models' counts with
every `nn.Parameter`, including the fixed sin-cos tables and the interaction module's dead parts.
This project does not build the dead parts (2 self-attention blocks, 14,175,744 parameters, and
unused tokens/tables, 1,599,744, of which 2,304 trainable) and keeps fixed tables as non-persistent
buffers. So:

  official pretrainer trainable = 237,917,828 - 14,175,744 - 2,304 = 223,739,780
  official detector trainable   = 211,849,237 - 14,175,744 - 2,304 = 197,671,189
  official total (with tables)  = 243,127,940 - 15,775,488 = 227,352,452 (pretrainer)
                                  214,663,189 - 15,775,488 = 198,887,701 (detector)
"""
from __future__ import annotations

import pytest
import torch

from havic.config import load_config
from havic.losses import loss_options, pretraining_losses
from havic.models import build_model, parameter_report

OFFICIAL_PRETRAIN_TRAINABLE = {
    "audio_encoder": 85_644_288,
    "video_encoder": 86_233_344,
    "audio_decoder": 10_751_488,
    "video_decoder": 12_722_304,
    "fusion": 2 * 7_089_408 + 3_072,  # two cross-attention units and the output norms
    "audio_to_video": 7_103_684,
    "video_to_audio": 7_102_784,
    "total": 223_739_780,
}
OFFICIAL_DETECTOR_TRAINABLE = {
    "audio_encoder": 85_644_288,
    "video_encoder": 86_233_344,
    "fusion": 14_181_888,
    "head": 5_901_313,
    "audio_head": 2_362_369,
    "video_head": 2_362_369,
    "audio_pools": 5 * 98_561,  # scoring nets of taps 3/6/9/12 and the fused stream
    "video_pools": 5 * 98_561,
    "audio_layer_weights": 4,
    "video_layer_weights": 4,
    "total": 197_671_189,
}
SELF_ATTENTION_BLOCK = 7_087_872  # one timm-style block, width 768, full qkv bias


@pytest.fixture(scope="module")
def official():
    return load_config(overrides=["model.variant=official"])


@pytest.mark.parametrize("kind,expected", [("pretrain", OFFICIAL_PRETRAIN_TRAINABLE),
                                            ("detector", OFFICIAL_DETECTOR_TRAINABLE)])
def test_official_parameter_counts(official, kind, expected):
    report = parameter_report(build_model(official.model, kind))
    assert {k: v["trainable"] for k, v in report.items()} == expected
    total = report["total"]["trainable"] + report["total"]["fixed_tables"]
    assert total == {"pretrain": 227_352_452, "detector": 198_887_701}[kind]


@pytest.mark.parametrize("kind", ["pretrain", "detector"])
def test_paper_variant_adds_the_fusion_self_attention_blocks(kind):
    paper = parameter_report(build_model(load_config().model, kind))
    expected = {"pretrain": OFFICIAL_PRETRAIN_TRAINABLE, "detector": OFFICIAL_DETECTOR_TRAINABLE}[kind]
    assert paper["fusion"]["trainable"] == expected["fusion"] + 2 * SELF_ATTENTION_BLOCK
    assert paper["total"]["trainable"] == expected["total"] + 2 * SELF_ATTENTION_BLOCK


@pytest.mark.slow
def test_full_size_detector_forward_batch_1(official):
    model = build_model(official.model, "detector").eval()
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 16, 224, 224), torch.randn(1, 1024, 128))
    assert out.logit.shape == (1,) and torch.isfinite(out.logit).all()


@pytest.mark.slow
def test_full_size_pretraining_forward_backward_batch_1():
    cfg = load_config()
    model = build_model(cfg.model, "pretrain").train()
    out = model(torch.rand(1, 3, 16, 224, 224), torch.randn(1, 1024, 128))
    assert out.ids_keep.video.shape == (1, 8 * 19) and out.ids_keep.audio.shape == (1, 8 * 12)
    assert out.video_preds[-1].shape == (1, 1568, 1536) and out.audio_preds[-1].shape == (1, 512, 256)
    terms = pretraining_losses(out, **loss_options(cfg.loss))
    terms["total"].backward()
    assert model.video_encoder.patch_embed.weight.grad is not None
    assert all(torch.isfinite(v) for v in terms.values())
