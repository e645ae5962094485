"""Official HAVIC state dicts -> the official variant: a bijection that computes what the official networks do."""
from __future__ import annotations

import math

import pytest
import torch

from havic import checkpoints as ck
from havic.config import load_config
from havic.checkpoints.official import recomputed_fixed_tables
from havic.models import build_model

from checkpoint_layouts import (
    AVIM, expected_official_ignored, official_layout, official_state_dict, official_tables, small, small_official,
)
from official_forward import official_detector_forward, official_pretrainer_forward, small_inputs

FULL_DOCUMENTED_SHAPES = {  # docs/official-differences.md#official-key-layout
    "audio_encoder.pos_embed": (1, 512, 768), "audio_encoder.modality": (1, 1, 768),
    "audio_encoder.cls_tokens": (1, 8, 768), "audio_encoder.patch_embed.proj.weight": (768, 1, 16, 16),
    "audio_encoder.blocks.0.attn.qkv.weight": (2304, 768), "audio_encoder.blocks.11.mlp.fc1.weight": (3072, 768),
    "visual_encoder.patch_embedding.projection.weight": (768, 3, 2, 16, 16),
    "visual_encoder.pos_embedding.emb": (1, 1568, 768),
    "visual_encoder.blocks.0.mlp.layers.0.linear.weight": (3072, 768),
    "visual_encoder.blocks.0.mlp.layers.1.linear.weight": (768, 3072), "visual_decoder.mask_token": (1, 1, 384),
    "visual_decoder.enc_dec_proj.weight": (384, 768), "visual_decoder.pos_embedding.emb": (1, 1568, 384),
    "visual_decoder.head.weight": (1536, 384), "visual_decoder.HiA_3.query_proj.weight": (384, 384),
    "visual_decoder.HiA_12.encoder2decoder.weight": (384, 768), "audio_decoder.decoder_pos_embed": (1, 512, 384),
    "audio_decoder.decoder_embed.weight": (384, 768), "audio_decoder.decoder_pred_1.weight": (256, 384),
    "A2V.TokenAligner.output_layer.weight": (196, 64), "V2A.TokenAligner.output_layer.weight": (64, 196),
    "AudioTokenReducer_AVI.mlp.0.weight": (128, 768), "VisualTokenReducer_3.mlp.2.weight": (1, 128),
}


@pytest.mark.parametrize("kind, n_tensors, n_params", [("pretrain", 676, 243_127_940), ("detector", 456, 214_663_189)])
def test_official_full_size_layout_converts_to_our_shapes(kind, n_tensors, n_params):
    cfg = load_config(overrides=["model.variant=official"])
    layout = official_layout(cfg.model, kind)
    # Tensors: docs/official-differences.md#official-key-layout; parameters, every official one:
    # docs/official-differences.md#parameter-counts.
    assert len(layout) == n_tensors
    assert sum(math.prod(s) for s in layout.values()) == n_params
    for key, shape in FULL_DOCUMENTED_SHAPES.items():
        assert key not in layout or layout[key] == shape, key
    sd = {k: torch.zeros(()).expand(s) for k, s in layout.items()}  # shapes only, no memory
    sd.update({k: v for k, v in official_tables(cfg.model).items() if k in sd})  # the checked fixed tables
    ours, ignored = ck.convert_official_havic(sd, kind, cfg.model)
    assert set(ignored) == expected_official_ignored(layout, kind)
    with torch.device("meta"):
        model = build_model(cfg.model, kind)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind, n_tensors", [("pretrain", 676), ("detector", 456)])
def test_official_conversion_is_a_bijection(kind, n_tensors):
    cfg = small_official()
    layout = official_layout(cfg.model, kind)
    assert len(layout) == n_tensors
    names = list(layout)
    sd = {k: torch.full(s, float(i + 1)) for i, (k, s) in enumerate(layout.items())}  # unique constant per tensor
    # Constant "tables" are no sin-cos tables: only the explicit opt-out converts them.
    with pytest.raises(ck.CheckpointError, match="fixed tables differ from ours"):
        ck.convert_official_havic(sd, kind, cfg.model)
    ours, ignored = ck.convert_official_havic(sd, kind, cfg.model, allow_table_mismatch=True)
    assert set(ignored) == expected_official_ignored(layout, kind) and all(ignored.values())
    assert all("allow_table_mismatch" in ignored[k] for k in ck.OFFICIAL_FIXED_TABLES if k in sd)
    model = build_model(cfg.model, kind)
    report = ck.load_with_report(model, ours)  # strict: nothing missing, unexpected or mis-shaped
    assert report.missing == [] and len(report.loaded) == n_tensors - len(ignored)
    origin = {}
    for key, t in model.state_dict().items():
        values = t.unique()
        assert values.numel() == 1, f"{key} mixes several official tensors"
        origin[key] = names[int(values.item()) - 1]
    assert len(set(origin.values())) == len(origin)  # no official tensor used twice
    assert set(origin.values()) == set(layout) - set(ignored)  # every kept official tensor used
    expected = {
        "video_encoder.blocks.4.mlp.fc2.bias": "visual_encoder.blocks.4.mlp.layers.1.linear.bias",
        "video_encoder.patch_embed.weight": "visual_encoder.patch_embedding.projection.weight",
        "fusion.video_cross.q.weight": f"{AVIM}.blocks.0.cross_attn_audio_to_video.q_proj.weight",
        "fusion.audio_cross.v.bias": f"{AVIM}.blocks.0.cross_attn_video_to_audio.v_proj.bias",
        "fusion.video_norm.weight": f"{AVIM}.norm_video_out.weight",
    }
    if kind == "pretrain":
        expected.update({
            "video_decoder.heads.0.weight": "visual_decoder.head_1.weight",
            "video_decoder.heads.3.bias": "visual_decoder.head.bias",
            "audio_decoder.heads.2.weight": "audio_decoder.decoder_pred_3.weight",
            "audio_decoder.heads.3.weight": "audio_decoder.decoder_pred.weight",
            "video_decoder.cross.9.encoder_proj.weight": "visual_decoder.HiA_9.encoder2decoder.weight",
            "audio_decoder.cross.3.norm_out.bias": "audio_decoder.HiA_3.out_norm.bias",
            "video_decoder.embed.weight": "visual_decoder.enc_dec_proj.weight",
            "audio_to_video.aligner.weight": "A2V.TokenAligner.output_layer.weight",
            "video_to_audio.block.attn.qkv.bias": "V2A.block.attn.qkv.bias",
        })
    else:
        expected.update({
            "head.layers.3.weight": "classifier.layers.1.weight", "head.layers.6.bias": "classifier.output_layer.bias",
            "audio_head.layers.0.weight": "classifier_audio.layers.0.weight",
            "video_head.layers.6.weight": "classifier_visual.output_layer.weight",
            "audio_pools.fusion.score.2.weight": "AudioTokenReducer_AVI.mlp.2.weight",
            "video_pools.9.score.0.bias": "VisualTokenReducer_9.mlp.0.bias",
            "audio_layer_weights.logits": "pool_a.weights",
        })
    assert {k: origin[k] for k in expected} == expected


def test_official_conversion_rejects_unknown_and_misfiled_keys():
    m = small_official().model
    pt = {k: torch.zeros(s) for k, s in official_layout(m, "pretrain").items()}
    with pytest.raises(ck.CheckpointError, match="use kind='pretrain'.*visual_decoder"):
        ck.convert_official_havic(pt, "detector", m)
    ft = {k: torch.zeros(s) for k, s in official_layout(m, "detector").items()}
    ft["audio_encoder.blocks.0.attn.k_bias"] = torch.zeros(32)
    with pytest.raises(ck.CheckpointError, match=r"1 official keys match no rule.*attn\.k_bias"):
        ck.convert_official_havic(ft, "detector", m)
    ft = {k: torch.zeros(s) for k, s in official_layout(m, "detector").items()}
    ft["audio_encoder.modality"] = torch.zeros(2, 1, 32)
    with pytest.raises(ck.CheckpointError, match=r"audio_encoder\.modality: .*\[2, 1, 32\]"):
        ck.convert_official_havic(ft, "detector", m)


def test_official_conversion_refuses_fixed_tables_of_another_layout_unless_allowed():
    cfg = small_official()
    sd = official_state_dict(cfg.model, "pretrain")
    # The audio tables of a time-major checkpoint: same shapes, other values (another token layout).
    paper = small("paper", "model.depth=12", "model.taps=[3,6,9,12]").model
    time_major = {k: v[None] for k, v in recomputed_fixed_tables(paper).items() if k.startswith(("A2V", "audio_"))}
    other = {**sd, **time_major}
    with pytest.raises(ck.CheckpointError, match=r"fixed tables differ from ours \(max abs difference: "
                                                 r"audio_decoder\.decoder_pos_embed \d\.\d+, A2V\.audio_pos_embed"):
        ck.convert_official_havic(other, "pretrain", cfg.model)
    with pytest.raises(ck.CheckpointError, match="fixed tables differ from ours"):  # the loaders refuse it too
        ck.load_official(other, "pretrain", cfg)
    ours, ignored = ck.convert_official_havic(other, "pretrain", cfg.model, allow_table_mismatch=True)
    assert "differs from the recomputed buffer by" in ignored["A2V.audio_pos_embed"]
    assert "allow_table_mismatch" in ignored["audio_decoder.decoder_pos_embed"]
    assert ignored["visual_encoder.pos_embedding.emb"].startswith("fixed sin-cos table") and "equal within" in (
        ignored["visual_encoder.pos_embedding.emb"])
    clean, _ = ck.convert_official_havic(sd, "pretrain", cfg.model)
    assert ours.keys() == clean.keys() and all(torch.equal(ours[k], clean[k]) for k in ours)  # tables are not ours
    model, report, tables = ck.load_official(other, "pretrain", cfg, allow_table_mismatch=True)
    assert tables["A2V.audio_pos_embed"] > 0.1 and tables["visual_encoder.pos_embedding.emb"] < 1e-5
    assert report.ignored["A2V.audio_pos_embed"] == ignored["A2V.audio_pos_embed"]


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_recomputed_fixed_tables_are_the_model_buffers(variant):
    cfg = small(variant, "model.depth=12", "model.taps=[3,6,9,12]")
    buffers = dict(build_model(cfg.model, "pretrain").named_buffers())
    tables = recomputed_fixed_tables(cfg.model)
    assert set(tables) == set(ck.OFFICIAL_FIXED_TABLES)
    for key, ours in ck.OFFICIAL_FIXED_TABLES.items():
        assert torch.equal(tables[key], buffers[ours]), key


def test_converted_detector_matches_the_official_forward():
    cfg = small_official()
    sd = official_state_dict(cfg.model, "detector")
    model = build_model(cfg.model, "detector").eval()
    ck.load_with_report(model, ck.convert_official_havic(sd, "detector", cfg.model)[0])
    video, audio = small_inputs()
    with torch.no_grad():
        out = model(video, audio)
        overall, audio_logit, video_logit = official_detector_forward(sd, video, audio, cfg.model)
    assert overall.abs().max() > 1e-3  # a non-trivial comparison
    torch.testing.assert_close(out.logit, overall, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.audio_logit, audio_logit, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.video_logit, video_logit, rtol=1e-4, atol=1e-5)


def test_converted_pretrainer_matches_the_official_forward():
    cfg = small_official()
    sd = official_state_dict(cfg.model, "pretrain", seed=1)
    model = build_model(cfg.model, "pretrain").eval()
    ck.load_with_report(model, ck.convert_official_havic(sd, "pretrain", cfg.model)[0])
    video, audio = small_inputs()
    ids = model.draw_masks(2, torch.device("cpu"), torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(video, audio, ids_keep=ids)
        ref = official_pretrainer_forward(sd, video, audio, ids.video, ids.audio, cfg.model)
    for name, expected in ref.items():
        got = getattr(out, name)
        for g, e in zip(got, expected) if isinstance(expected, list) else [(got, expected)]:
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")


def test_fixed_tables_of_the_official_checkpoint_match_our_buffers():
    cfg = small_official()
    sd = official_state_dict(cfg.model, "pretrain")
    model = build_model(cfg.model, "pretrain")
    diffs = ck.compare_fixed_tables(sd, model)
    assert set(diffs) == set(ck.OFFICIAL_FIXED_TABLES) and max(diffs.values()) < 1e-5
    paper = build_model(small("paper", "model.depth=12", "model.taps=[3,6,9,12]").model, "pretrain")
    assert ck.compare_fixed_tables(sd, paper)["audio_decoder.decoder_pos_embed"] > 0.1  # time-major layout differs


def test_load_official_builds_loads_and_checks_the_fixed_tables():
    cfg = small_official()
    sd = official_state_dict(cfg.model, "detector")
    model, report, tables = ck.load_official(sd, "detector", cfg)
    ours, ignored = ck.convert_official_havic(sd, "detector", cfg.model)
    assert report.ignored == ignored and set(report.loaded) == set(ours) and not report.missing
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ours.items())
    assert set(tables) == {k for k in ck.OFFICIAL_FIXED_TABLES if k in sd} and max(tables.values()) < 1e-5
    shifted = {**sd, "visual_encoder.pos_embedding.emb": sd["visual_encoder.pos_embedding.emb"] + 0.1}
    with pytest.raises(ck.CheckpointError, match=r"differ from ours \(max abs difference: visual_encoder\S+ 0\.1"):
        ck.load_official(shifted, "detector", cfg)
    with pytest.raises(ck.CheckpointError, match="does not fit the official variant"):
        ck.load_official(sd, "detector", small("official"))  # 2 blocks; the state dict has 12
