"""Initialised from AudioMAE and MARLIN, the encoders compute what AudioMAE and MARLIN compute.

The references (tests/upstream_reference.py) are written from the upstream code on the upstream
key names; the weights are random at trained-ViT scale with the true fixed tables. Segment-level
additions (the segment CLS tokens) are set aside: ``plain_forward`` runs an encoder without them,
and with one segment the single CLS slot can hold AudioMAE's own global CLS token.
"""
from __future__ import annotations

import pytest
import torch

from havic import checkpoints as ck
from havic.checkpoints.upstream import audio_input_notes
from havic.config import load_config
from havic.models import build_model
from havic.models.masking import scatter_tokens

from checkpoint_layouts import marlin_table, read_key_dump, small, upstream_layout
from upstream_reference import (
    audiomae_encoder, mae_sincos_2d, marlin_decoder, marlin_encoder, marlin_targets, realistic_state_dict,
    relative_error,
)

TOLERANCE = 1e-4  # relative error allowed against the reference forwards


def upstream_weights(m, audiomae_decoder_blocks: int = 1, layouts=None):
    """Realistic AudioMAE and MARLIN state dicts for model config ``m``, with their true fixed tables."""
    am_layout, mar_layout = layouts or upstream_layout(m, audiomae_decoder_blocks)
    a, v = m.audio, m.video
    lv = (v.num_frames // v.tubelet_size) * (v.image_size // v.patch_size) ** 2
    am_table = mae_sincos_2d(m.dim, a.num_frames // a.patch_size, a.num_mel_bins // a.patch_size)[None]
    audiomae = realistic_state_dict(am_layout, 0, {"pos_embed": am_table})
    marlin = realistic_state_dict(mar_layout, 1, {"encoder.pos_embedding.emb": marlin_table(lv, m.dim),
                                                  "decoder.pos_embedding.emb": marlin_table(lv, m.decoder_dim)})
    return audiomae, marlin


def initialised(cfg, audiomae, marlin):
    partial, _ = ck.convert_audiomae_marlin(audiomae, marlin, cfg.model)
    model = build_model(cfg.model, "pretrain").eval()
    ck.load_with_report(model, partial, expected_missing=ck.PRETRAIN_INIT_ONLY)
    return model


def audiomae_order(grid) -> torch.Tensor:
    """AudioMAE's token (time-major patch index) of each of our tokens, from the documented layouts."""
    k = torch.arange(grid.num_tokens)
    if grid.order == "time":  # our token k = t * n_mel + f, as AudioMAE's
        return k
    f, t = k // grid.time_patches, k % grid.time_patches  # our token k = f * n_time + t
    return t * grid.mel_patches + f


@pytest.mark.parametrize("order", ["time", "mel"])
def test_audiomae_initialised_audio_encoder_reproduces_audiomae(order):
    cfg = small("paper", f"model.audio_token_order={order}")
    audiomae, marlin = upstream_weights(cfg.model)
    model = initialised(cfg, audiomae, marlin)
    fbank = torch.randn(2, 64, 32)
    with torch.no_grad():
        ours = model.audio_encoder.plain_forward(fbank)[max(cfg.model.taps)]
        reference = audiomae_encoder(audiomae, fbank, cfg.model.num_heads, with_cls=False)
    assert relative_error(ours, reference[:, audiomae_order(model.audio_grid)]) < TOLERANCE
    # The official variant keeps the official initialisation: it computes something else.
    official = initialised(small("official", f"model.audio_token_order={order}"), audiomae, marlin)
    with torch.no_grad():
        theirs = official.audio_encoder.plain_forward(fbank)[max(cfg.model.taps)]
    assert relative_error(theirs, reference[:, audiomae_order(official.audio_grid)]) > 0.1


@pytest.mark.parametrize("order", ["time", "mel"])
def test_one_segment_with_audiomae_cls_token_is_audiomae_itself(order):
    """With one segment, its CLS slot holding AudioMAE's CLS token, the full forward is AudioMAE's, CLS included."""
    cfg = small("paper", f"model.audio_token_order={order}", "model.num_segments=1")
    audiomae, marlin = upstream_weights(cfg.model)
    model = initialised(cfg, audiomae, marlin)
    enc = model.audio_encoder
    with torch.no_grad():
        enc.cls_tokens.copy_(audiomae["cls_token"][0] + audiomae["pos_embed"][0, :1] - enc.cls_pos)
        fbank = torch.randn(2, 64, 32)
        ours = enc(fbank).sequence()  # (B, 1 + L, D): the CLS token, then the patches in our order
        reference = audiomae_encoder(audiomae, fbank, cfg.model.num_heads)
    expected = torch.cat([reference[:, :1], reference[:, 1:][:, audiomae_order(model.audio_grid)]], dim=1)
    assert relative_error(ours, expected) < TOLERANCE


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_marlin_initialised_video_encoder_reproduces_marlin(variant):
    cfg = small(variant)
    audiomae, marlin = upstream_weights(cfg.model)
    model = initialised(cfg, audiomae, marlin)
    video = torch.rand(2, 3, 4, 32, 32)
    with torch.no_grad():
        ours = model.video_encoder.plain_forward(video)[max(cfg.model.taps)]
        reference = marlin_encoder(marlin, video, cfg.model.num_heads)
    assert relative_error(ours, reference) < TOLERANCE


def test_marlin_decoder_tensors_compute_marlins_decoder():
    """Mask token, positions, blocks, norm and head: MARLIN's decoder, without our per-tap cross-attention."""
    cfg = small("paper")
    audiomae, marlin = upstream_weights(cfg.model)
    model = initialised(cfg, audiomae, marlin)
    dec, grid = model.video_decoder, model.video_grid
    video = torch.rand(2, 3, 4, 32, 32)
    ids = model.draw_masks(2, torch.device("cpu"), torch.Generator().manual_seed(0)).video
    visible = torch.randn(2, ids.shape[1], cfg.model.dim)
    is_visible = torch.zeros(2, grid.num_tokens, dtype=torch.bool).scatter_(1, ids, True)
    with torch.no_grad():
        x = scatter_tokens(dec.embed(visible), ids, grid.num_tokens, dec.mask_token) + dec.pos_embed
        for block in dec.blocks:
            x = block(x)
        ours = dec.heads[-1](dec.norm(x))
        reference = marlin_decoder(marlin, visible, is_visible, cfg.model.decoder_heads)
    assert relative_error(ours, reference) < TOLERANCE
    # MARLIN's head predicts the patch values in the order of our reconstruction targets.
    assert torch.equal(grid.patchify(video), marlin_targets(video, grid.tubelet_size, grid.patch_size))


def test_audio_norm_eps_is_a_variant_switch_of_the_audio_encoder_only():
    paper, official = (build_model(small(v).model, "pretrain") for v in ("paper", "official"))
    for model, eps in ((paper, 1e-6), (official, 1e-5)):
        norms = [m for m in model.audio_encoder.modules() if isinstance(m, torch.nn.LayerNorm)]
        assert len(norms) == 2 * 2 + 1 and all(m.eps == eps for m in norms)
        assert all(m.eps == 1e-5 for m in model.video_encoder.modules() if isinstance(m, torch.nn.LayerNorm))
    override = build_model(small("paper", "model.audio_norm_eps=1e-5").model, "pretrain")
    assert override.audio_encoder.norm.eps == 1e-5


def test_conversion_report_states_each_variant_choice():
    for variant in ("official", "paper"):
        cfg = small(variant)
        audiomae, marlin = upstream_weights(cfg.model)
        _, conversion, load = ck.init_pretrainer(audiomae, marlin, cfg)
        text = conversion.summary()
        if variant == "paper":
            assert conversion.loaded["audio_encoder.modality"].startswith("zeros (AudioMAE adds no modality token")
            assert "audio_encoder.pos_embed" in load.loaded and "audio_encoder.modality" in load.loaded
            assert not any("audio_norm_eps" in n or "normalises" in n for n in conversion.notes)
        else:
            assert "audio_encoder.pos_embed" not in conversion.loaded and "audio_encoder.modality" not in load.loaded
            assert "init_audio_pos_from_upstream=false" in conversion.skipped["audiomae:pos_embed"]
            assert "note: model.audio_norm_eps=1e-05: the AudioMAE-initialised LayerNorms use another epsilon" in text
            # (-6.996 / 3.1205) against AudioMAE's (-4.26774 / 9.13799): 9.138 / 3.1205 = 2.93 times the scale
            assert "the audio encoder sees its input at 2.93x AudioMAE's scale" in text
        # tiny: 64 frames hold 0.64 s; the 3.2 s clip is stretched onto them
        assert "a 3.2 s clip fills the 64 fbank frames that hold 0.64 s in AudioMAE" in text


def test_full_size_stretch_note_says_time_is_compressed_3_2x():
    cfg = load_config()
    notes = audio_input_notes(cfg)
    assert notes == ["data.audio.length_policy=stretch: a 3.2 s clip fills the 1024 fbank frames that hold 10.24 s "
                     "in AudioMAE, so the audio encoder sees time compressed 3.20x (HAVIC's design)"]
    assert audio_input_notes(load_config(overrides=["data.audio.length_policy=pad_crop"])) == []


@pytest.mark.slow
@pytest.mark.parametrize("order", ["time", "mel"])
def test_full_size_encoders_reproduce_audiomae_and_marlin(assets_dir, order):
    cfg = load_config(overrides=[f"model.audio_token_order={order}"])
    keys = assets_dir / "keys"
    layouts = tuple(read_key_dump(keys / n) for n in ("audiomae_pretrained_keys.txt", "marlin_vit_base_ytf_keys.txt"))
    audiomae, marlin = upstream_weights(cfg.model, layouts=layouts)
    model = initialised(cfg, audiomae, marlin)
    fbank, video = torch.randn(1, 1024, 128), torch.rand(1, 3, 16, 224, 224)
    with torch.no_grad():
        audio = model.audio_encoder.plain_forward(fbank, taps=[12])[12]
        reference = audiomae_encoder(audiomae, fbank, 12, with_cls=False)
        assert relative_error(audio, reference[:, audiomae_order(model.audio_grid)]) < TOLERANCE
        if order == "time":  # the video side does not depend on the audio token order
            ours = model.video_encoder.plain_forward(video, taps=[12])[12]
            assert relative_error(ours, marlin_encoder(marlin, video, 12)) < TOLERANCE
