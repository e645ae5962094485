"""HAVIC networks in a tiny configuration: shapes, gradients, variant semantics and errors."""
from __future__ import annotations

import pytest
import torch

from havic.config import CONFIG_DIR, load_config
from havic.losses import detection_bce, loss_options, pretraining_losses
from havic.models import HavicDetector, HavicPretrainer, build_model
from havic.models.encoders import insert_cls, strip_cls
from havic.models.masking import gather_tokens

VARIANTS = ["paper", "official"]


def tiny(variant: str, *overrides: str):
    return load_config([CONFIG_DIR / "tiny.yaml"], [f"model.variant={variant}", *overrides])


def inputs(batch: int = 2):
    g = torch.Generator().manual_seed(1)
    return torch.rand(batch, 3, 4, 32, 32, generator=g), torch.randn(batch, 64, 32, generator=g)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pretrainer_output_shapes(variant: str):
    cfg = tiny(variant)
    model = build_model(cfg.model, "pretrain")
    video, audio = inputs()
    out = model(video, audio)
    vg, ag = model.video_grid, model.audio_grid
    assert len(out.video_preds) == len(out.audio_preds) == 2
    assert all(p.shape == (2, vg.num_tokens, vg.patch_dim) for p in out.video_preds)
    assert all(p.shape == (2, ag.num_tokens, ag.patch_dim) for p in out.audio_preds)
    assert out.video_target.shape == out.video_preds[0].shape
    assert out.video_segments.shape == out.audio_segments.shape == (2, 2, 32)
    assert out.video_from_audio.shape == out.video_teacher.shape == (2, vg.num_tokens, 32)
    assert out.audio_from_video.shape == out.audio_teacher.shape == (2, ag.num_tokens, 32)
    # 2 time steps x int(16 * 0.1) = 1 kept; audio: 2 segments x int(16 * 0.1875) = 3 kept
    assert out.ids_keep.video.shape == (2, 2) and out.ids_keep.audio.shape == (2, 6)
    assert out.video_hidden.sum(1).tolist() == [30, 30] and out.audio_hidden.sum(1).tolist() == [26, 26]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_trainable_parameter_gets_a_gradient(variant: str):
    cfg = tiny(variant)
    model = build_model(cfg.model, "pretrain").train()
    video, audio = inputs()
    out = model(video, audio)
    assert not out.video_teacher.requires_grad and not out.audio_teacher.requires_grad
    pretraining_losses(out, **loss_options(cfg.loss))["total"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert missing == []
    assert all(not b.requires_grad for b in model.buffers())  # fixed tables never train


@pytest.mark.parametrize("variant", VARIANTS)
def test_detector_shapes_and_gradients(variant: str):
    cfg = tiny(variant)
    model = build_model(cfg.model, "detector").train()
    video, audio = inputs(3)
    out = model(video, audio)
    assert out.logit.shape == out.audio_logit.shape == out.video_logit.shape == (3,)
    labels = {k: torch.tensor([0.0, 1.0, 1.0]) for k in ("overall", "audio", "video")}
    detection_bce(out.logits(), labels)["total"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_audio_less_input_uses_the_video_head_only():
    model = build_model(tiny("paper").model, "detector").eval()
    video, _ = inputs()
    out = model(video, None)
    assert not out.has_audio and out.audio_logit is None
    torch.testing.assert_close(out.logit, out.video_logit)
    out.logit.sum().backward()
    assert all(p.grad is None for p in model.audio_encoder.parameters())
    assert all(p.grad is None for p in model.fusion.parameters())


def test_audio_less_input_without_aux_heads_is_an_error():
    model = build_model(tiny("paper", "model.aux_heads=false").model, "detector")
    with pytest.raises(ValueError, match="aux_heads"):
        model(inputs()[0], None)


def test_mean_aggregation_ablation_has_no_scoring_parameters():
    attn = build_model(tiny("paper").model, "detector")
    mean = build_model(tiny("paper", "model.aggregation=mean").model, "detector")
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    pools = sum(p.numel() for p in attn.video_pools.parameters()) + sum(p.numel() for p in attn.audio_pools.parameters())
    assert n(attn) - n(mean) == pools + 2 * len(attn.taps)  # token scorers and the layer weights
    video, audio = inputs()
    assert mean(video, audio).logit.shape == (2,)


@pytest.mark.parametrize("variant", VARIANTS)
def test_wrong_shapes_raise_value_errors_naming_both_shapes(variant: str):
    model = build_model(tiny(variant).model, "pretrain")
    video, audio = inputs()
    with pytest.raises(ValueError, match=r"audio: expected shape \(\*, 64, 32\), got \(2, 32, 64\)"):
        model(video, audio.transpose(1, 2))
    with pytest.raises(ValueError, match=r"video: expected shape \(\*, 3, 4, 32, 32\), got \(2, 3, 8, 32, 32\)"):
        model(torch.rand(2, 3, 8, 32, 32), audio)
    with pytest.raises(ValueError, match="batch sizes differ"):
        model(video, audio[:1])


def test_segment_features_are_means_of_the_visible_last_tap_tokens():
    model = build_model(tiny("paper").model, "pretrain").eval()
    video, audio = inputs()
    ids = model.draw_masks(2, video.device, torch.Generator().manual_seed(0))
    out = model(video, audio, ids_keep=ids)
    enc = model.audio_encoder(audio, ids.audio)
    torch.testing.assert_close(out.audio_segments, enc.patches().view(2, 2, 3, -1).mean(2))


def test_encoder_taps_are_normalised_block_outputs():
    model = build_model(tiny("paper").model, "pretrain").eval()
    enc = model.video_encoder
    video = inputs()[0]
    h = insert_cls(enc.embed(video), enc.cls_tokens + enc.cls_pos)
    taps = enc(video).taps
    for i, block in enumerate(enc.blocks, start=1):
        h = block(h)
        torch.testing.assert_close(taps[i].flatten(1, 2), enc.norm(h))


def test_cls_insertion_round_trip():
    tokens = torch.randn(2, 6, 4)
    cls = torch.randn(3, 4)
    seq = insert_cls(tokens, cls)
    assert seq.shape == (2, 9, 4)
    torch.testing.assert_close(seq[:, 0::3], cls.expand(2, 3, 4))
    torch.testing.assert_close(strip_cls(seq, 3), tokens)


def test_official_audio_cls_has_no_positions_and_paper_does():
    official = build_model(tiny("official").model, "pretrain")
    paper = build_model(tiny("paper").model, "pretrain")
    assert not official.audio_encoder.cls_pos.any()
    assert paper.audio_encoder.cls_pos.any()
    assert official.video_encoder.cls_pos.any()  # video CLS always positioned


def test_official_fusion_is_the_double_residual_without_self_attention():
    fusion = build_model(tiny("official").model, "detector").fusion.eval()
    assert fusion.video_self is None and fusion.audio_self is None
    xv, xa = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    v, a = fusion(xv, xa)
    cma = fusion.video_cross
    q = cma.q(cma.norm_q(xv)).view(2, 5, 2, 16).transpose(1, 2)
    k = cma.k(cma.norm_k(xa)).view(2, 7, 2, 16).transpose(1, 2)
    val = cma.v(xa).view(2, 7, 2, 16).transpose(1, 2)
    attn = (q @ k.transpose(-1, -2) / 4.0).softmax(-1) @ val
    o = cma.proj(attn.transpose(1, 2).reshape(2, 5, 32))
    # X + (X + o + MLP(LN(X + o))), then the output norm: docs/official-differences.md#audio-visual-fusion
    expected = fusion.video_norm(2 * xv + o + cma.mlp(cma.norm2(xv + o)))
    torch.testing.assert_close(v, expected, rtol=1e-5, atol=1e-5)


def test_paper_fusion_is_single_residual_then_self_attention():
    fusion = build_model(tiny("paper").model, "detector").fusion.eval()
    xv, xa = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    v, _ = fusion(xv, xa)
    torch.testing.assert_close(v, fusion.video_norm(fusion.video_self(fusion.video_cross(xv, xa))))


def test_decoder_layers_read_taps_deepest_first():
    model = build_model(load_config(overrides=["model.depth=4", "model.taps=[1,2,3,4]", "model.dim=32",
                                               "model.num_heads=2", "model.decoder_dim=16", "model.decoder_heads=2",
                                               "model.fusion_heads=2", "model.semantic_heads=2"]).model, "pretrain")
    dec = model.video_decoder
    assert [dec.chain(i) for i in range(4)] == [(4, 3, 2, 1), (3, 2, 1), (2, 1), (1,)]
    assert len(dec.cross) == 4 and len(dec.heads) == 4


def test_teacher_targets_follow_the_drop_path_switch():
    video, audio = inputs()
    deterministic = build_model(tiny("paper", "model.video_drop_path=0.5").model, "pretrain").train()
    a, _ = deterministic.teacher_features(video, audio)
    b, _ = deterministic.teacher_features(video, audio)
    torch.testing.assert_close(a, b)
    stochastic = build_model(tiny("official", "model.video_drop_path=0.5").model, "pretrain").train()
    a, _ = stochastic.teacher_features(video, audio)
    b, _ = stochastic.teacher_features(video, audio)
    assert not torch.allclose(a, b)


def test_same_masks_give_the_same_output_in_eval_mode():
    model = build_model(tiny("official").model, "pretrain").eval()
    video, audio = inputs()
    ids = model.draw_masks(2, video.device)
    first, second = model(video, audio, ids_keep=ids), model(video, audio, ids_keep=ids)
    torch.testing.assert_close(first.video_preds[-1], second.video_preds[-1])
    other = model(video, audio, generator=torch.Generator().manual_seed(123))
    assert not torch.equal(other.ids_keep.audio, ids.audio)


def test_decoder_sees_only_visible_tokens_of_the_encoder():
    """Changing a masked video patch changes neither the visible encoder tokens nor the predictions."""
    model = build_model(tiny("paper").model, "pretrain").eval()
    video, audio = inputs()
    ids = model.draw_masks(2, video.device, torch.Generator().manual_seed(0))
    patches = model.video_grid.patchify(video)
    hidden = ~torch.zeros(2, model.video_grid.num_tokens, dtype=torch.bool).scatter(1, ids.video, True)
    edited = torch.where(hidden.unsqueeze(-1), torch.rand_like(patches), patches)
    a = model(video, audio, ids_keep=ids)
    b = model(model.video_grid.unpatchify(edited), audio, ids_keep=ids)
    torch.testing.assert_close(a.video_preds[-1], b.video_preds[-1])
    torch.testing.assert_close(gather_tokens(a.video_target, ids.video), gather_tokens(b.video_target, ids.video))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_forward_under_cpu_autocast(dtype):
    cfg = tiny("paper")
    model = build_model(cfg.model, "pretrain")
    video, audio = inputs()
    with torch.autocast("cpu", dtype=dtype):
        terms = pretraining_losses(model(video, audio), **loss_options(cfg.loss))
    assert torch.isfinite(terms["total"]) and terms["total"].dtype == torch.float32
    terms["total"].backward()


def test_model_classes_and_kind_errors():
    cfg = tiny("paper")
    assert isinstance(build_model(cfg.model, "pretrain"), HavicPretrainer)
    assert isinstance(build_model(cfg.model, "detector"), HavicDetector)
    with pytest.raises(ValueError, match="kind"):
        build_model(cfg.model, "classifier")


def test_pretraining_loss_weights_and_ablations():
    cfg = tiny("paper")
    model = build_model(cfg.model, "pretrain").eval()
    out = model(*inputs())
    t = pretraining_losses(out, **loss_options(cfg.loss))
    expected = t["rec_video"] + t["rec_audio"] + 0.01 * t["contrastive"] + t["cross_video"] + t["cross_audio"]
    torch.testing.assert_close(t["total"], expected)
    no_cl = pretraining_losses(out, **{**loss_options(cfg.loss), "contrastive_weight": 0.0})
    torch.testing.assert_close(no_cl["total"], expected - 0.01 * t["contrastive"])
    clip = pretraining_losses(out, **{**loss_options(cfg.loss), "temporal_segments": False})
    assert clip["contrastive"] != t["contrastive"]
