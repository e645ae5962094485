"""AudioMAE + MARLIN -> the initialisation of a pretrainer: every upstream tensor accounted for."""
from __future__ import annotations

import fnmatch
import re

import pytest
import torch
import torch.nn.functional as F

from havic import checkpoints as ck
from havic.config import load_config
from havic.models import build_model
from havic.models.patching import AudioGrid

from checkpoint_layouts import random_state_dict, read_key_dump, small, upstream_layout
from official_forward import f_attend, f_lin


def expected_source(target: str) -> tuple[str, str]:
    """(checkpoint, key) each of our tensors should come from, by the intended mapping.

    See docs/official-differences.md#audiomae-and-marlin-initialisation.
    """
    if target.startswith("audio_encoder."):
        key = target[len("audio_encoder."):].replace("patch_embed.", "patch_embed.proj.")
        return "audiomae", re.sub(r"attn\.[qv]_bias$", "attn.qkv.bias", key)
    def marlin(k):
        return k.replace("mlp.fc1", "mlp.layers.0.linear").replace("mlp.fc2", "mlp.layers.1.linear")

    if target.startswith("video_encoder."):
        key = target[len("video_encoder."):].replace("patch_embed.", "patch_embedding.projection.")
        return "marlin", "encoder." + marlin(key)
    key = target[len("video_decoder."):]
    if key == "embed.weight":
        return "marlin", "enc_dec_proj.weight"
    return "marlin", "decoder." + marlin(re.sub(r"^heads\.\d+\.", "head.", key))


def audio_grid(m) -> AudioGrid:
    return AudioGrid(m.audio.num_frames, m.audio.num_mel_bins, m.audio.patch_size, m.num_segments,
                     m.audio_token_order)


def audiomae_row(k: int, grid: AudioGrid) -> int:
    """Row of AudioMAE's ``pos_embed`` for our audio token k: row 0 is its CLS token, then time-major patches."""
    if grid.order == "time":  # our token k = t * n_mel + f
        t, f = divmod(k, grid.mel_patches)
    else:  # our token k = f * n_time + t
        f, t = divmod(k, grid.time_patches)
    return 1 + t * grid.mel_patches + f


def check_audiomae_marlin(partial, report, audiomae, marlin, model_cfg, shapes):
    """Every upstream tensor accounted for, every converted tensor equal to its intended source."""
    by_variant = {"audio_encoder.pos_embed": model_cfg.init_audio_pos_from_upstream,
                  "audio_encoder.modality": model_cfg.init_audio_modality_zero}
    expected_keys = {k for k in shapes if not any(fnmatch.fnmatchcase(k, p) for p in ck.PRETRAIN_INIT_ONLY)}
    assert set(partial) == expected_keys | {k for k, on in by_variant.items() if on}
    sources = {"audiomae": audiomae, "marlin": marlin}
    d = audiomae["norm.weight"].numel()
    for target, value in partial.items():
        if target == "audio_encoder.pos_embed":
            grid = audio_grid(model_cfg)
            rows = [audiomae_row(k, grid) for k in range(grid.num_tokens)]
            assert torch.equal(value, audiomae["pos_embed"][0, rows]), target
            continue
        if target == "audio_encoder.modality":
            assert torch.equal(value, torch.zeros(d)), target
            continue
        ckpt, key = expected_source(target)
        src = sources[ckpt][key]
        if ckpt == "audiomae" and target.endswith("attn.q_bias"):
            src = src[:d]
        elif ckpt == "audiomae" and target.endswith("attn.v_bias"):
            src = src[2 * d:]
        elif target == "audio_encoder.patch_embed.weight" and model_cfg.audio_token_order == "mel":
            src = src.transpose(2, 3)
        elif target == "video_decoder.mask_token":
            src = src.reshape(-1)
        assert torch.equal(value, src), target
    heads = [partial[f"video_decoder.heads.{i}.weight"] for i in range(len(model_cfg.taps))]
    assert len({h.data_ptr() for h in heads}) == len(heads)  # copies, not one shared tensor
    used = {re.sub(r"\[.*|\s.*", "", s) for s in report.loaded.values() if not s.startswith("zeros (")}
    skipped = {re.sub(r"\[.*", "", s) for s in report.skipped}
    every = {f"audiomae:{k}" for k in audiomae} | {f"marlin:{k}" for k in marlin}
    assert used | skipped == every and all(report.skipped.values())
    not_encoder = {k for k in audiomae if not k.startswith(("patch_embed.", "blocks.", "norm."))}
    if model_cfg.init_audio_pos_from_upstream:  # only its CLS row is left out
        not_encoder = (not_encoder - {"pos_embed"}) | {"pos_embed[0:1]"}
    expected_skipped = ({f"audiomae:{k}" for k in not_encoder}
                        | {f"audiomae:{k}[{d}:{2 * d}]" for k in audiomae
                           if re.fullmatch(r"blocks\.\d+\.attn\.qkv\.bias", k)}
                        | {"marlin:encoder.pos_embedding.emb", "marlin:decoder.pos_embedding.emb"})
    assert set(report.skipped) == expected_skipped
    # The reasons say what each variant does with AudioMAE's table.
    if model_cfg.init_audio_pos_from_upstream:
        assert "global CLS token" in report.skipped["audiomae:pos_embed[0:1]"]
    else:
        assert "init_audio_pos_from_upstream=false" in report.skipped["audiomae:pos_embed"]
    assert "equal within" in report.skipped["marlin:encoder.pos_embedding.emb"]


def fbank_patch_tokens(weight, bias, fbank, grid: AudioGrid):
    """(B, L, D) tokens of our patch embedding, reordered to AudioMAE's (time, mel) grid order."""
    tokens = F.conv2d(grid.to_image(fbank), weight, bias, stride=grid.patch_size).flatten(2).transpose(1, 2)
    order = (grid.token_time() * grid.mel_patches + grid.token_mel()).argsort()
    return tokens[:, order]


@pytest.fixture(scope="module")
def upstream_full(assets_dir):
    keys = assets_dir / "keys"
    am, mar = (read_key_dump(keys / n) for n in ("audiomae_pretrained_keys.txt", "marlin_vit_base_ytf_keys.txt"))
    return random_state_dict(am, 0), random_state_dict(mar, 1)


def test_key_dumps_match_the_documented_structure(assets_dir):
    am = read_key_dump(assets_dir / "keys" / "audiomae_pretrained_keys.txt")
    mar = read_key_dump(assets_dir / "keys" / "marlin_vit_base_ytf_keys.txt")
    assert (len(am), len(mar)) == (430, 220)
    gen_am, gen_mar = upstream_layout(load_config().model)
    assert (gen_am, gen_mar) == (am, mar)  # the generator used for the small tests mirrors the dumps


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_audiomae_marlin_full_size_mapping(upstream_full, variant):
    audiomae, marlin = upstream_full
    cfg = load_config(overrides=[f"model.variant={variant}"])
    partial, report = ck.convert_audiomae_marlin(audiomae, marlin, cfg.model)
    # 160 from AudioMAE (incl. 24 split biases) + 224 from MARLIN (4 heads); paper: + positions, modality
    assert len(partial) == {"official": 384, "paper": 386}[variant]
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in build_model(cfg.model, "pretrain").state_dict().items()}
    check_audiomae_marlin(partial, report, audiomae, marlin, cfg.model, shapes)
    # The loaded filter sees the same (time, mel) patch as AudioMAE's filter on its (time, mel) image.
    grid = AudioGrid(1024, 128, 16, 8, cfg.model.audio_token_order)
    fbank = torch.randn(1, 1024, 128)
    weight, bias = partial["audio_encoder.patch_embed.weight"], partial["audio_encoder.patch_embed.bias"]
    ours = fbank_patch_tokens(weight, bias, fbank, grid)
    theirs = F.conv2d(fbank[:, None], audiomae["patch_embed.proj.weight"], audiomae["patch_embed.proj.bias"], stride=16)
    torch.testing.assert_close(ours, theirs.flatten(2).transpose(1, 2), rtol=1e-4, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["official", "paper"])
def test_audiomae_marlin_full_size_changes_exactly_the_mapped_tensors(upstream_full, variant):
    cfg = load_config(overrides=[f"model.variant={variant}"])
    partial, _ = ck.convert_audiomae_marlin(*upstream_full, cfg.model)
    model = build_model(cfg.model, "pretrain")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = ck.load_with_report(model, partial, expected_missing=ck.PRETRAIN_INIT_ONLY)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == set(partial) == set(report.loaded)
    assert len(before) - len(changed) == len(report.missing)


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_audiomae_marlin_small_changes_exactly_the_mapped_tensors(variant):
    cfg = small(variant)
    am_layout, mar_layout = upstream_layout(cfg.model, audiomae_decoder_blocks=2)
    audiomae, marlin = random_state_dict(am_layout, 0), random_state_dict(mar_layout, 1)
    partial, report = ck.convert_audiomae_marlin(audiomae, marlin, cfg.model)
    model = build_model(cfg.model, "pretrain")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    load = ck.load_with_report(model, partial, expected_missing=ck.PRETRAIN_INIT_ONLY)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == set(partial) == set(load.loaded)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_audiomae_marlin(partial, report, audiomae, marlin, cfg.model, shapes)
    for i in range(len(cfg.model.taps)):  # every decoder layer starts from MARLIN's single head
        assert torch.equal(model.video_decoder.heads[i].weight, marlin["decoder.head.weight"])
    assert torch.equal(model.video_decoder.mask_token, marlin["decoder.mask_token"].reshape(-1))
    # The k part of AudioMAE's fused bias is dropped exactly: attention with the full bias equals ours.
    x = torch.randn(2, 5, cfg.model.dim)
    p = "blocks.0.attn"
    q, k, v = F.linear(x, audiomae[f"{p}.qkv.weight"], audiomae[f"{p}.qkv.bias"]).chunk(3, dim=-1)
    assert audiomae[f"{p}.qkv.bias"].chunk(3)[1].abs().max() > 0.1
    reference = f_lin(f_attend(q, k, v, cfg.model.num_heads), audiomae, f"{p}.proj")
    with torch.no_grad():
        ours = model.audio_encoder.blocks[0].attn(x)
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)
        model.audio_encoder.blocks[0].attn.v_bias.zero_()  # control: the value bias does matter
        assert (model.audio_encoder.blocks[0].attn(x) - reference).abs().max() > 0.1
    # The loaded filter sees the same (time, mel) patch as AudioMAE would.
    fbank = torch.randn(2, 64, 32)
    ours = fbank_patch_tokens(model.audio_encoder.patch_embed.weight, model.audio_encoder.patch_embed.bias,
                              fbank, model.audio_grid)
    theirs = F.conv2d(fbank[:, None], audiomae["patch_embed.proj.weight"], audiomae["patch_embed.proj.bias"], stride=8)
    with torch.no_grad():
        torch.testing.assert_close(ours, theirs.flatten(2).transpose(1, 2), rtol=1e-5, atol=1e-5)


def test_audiomae_marlin_rejects_unknown_keys_and_wrong_sizes():
    cfg = small("paper")
    am_layout, mar_layout = upstream_layout(cfg.model, audiomae_decoder_blocks=1)
    audiomae, marlin = random_state_dict(am_layout, 0), random_state_dict(mar_layout, 1)
    with pytest.raises(ck.CheckpointError, match=r"marlin:decoder\.extra"):
        ck.convert_audiomae_marlin(audiomae, {**marlin, "decoder.extra": torch.zeros(1)}, cfg.model)
    deeper = dict(audiomae)
    deeper.update({k.replace("blocks.0.", "blocks.7."): v for k, v in audiomae.items() if k.startswith("blocks.0.")})
    with pytest.raises(ck.CheckpointError, match=r"audio_encoder\.blocks\.7\.norm1\.weight does not exist"):
        ck.convert_audiomae_marlin(deeper, marlin, cfg.model)
    with pytest.raises(ck.CheckpointError, match=r"patch_embed\.proj\.weight -> .* does not fit"):
        ck.convert_audiomae_marlin(audiomae, marlin, small("paper", "model.audio.patch_size=16",
                                                           "model.init_audio_pos_from_upstream=false").model)
    with pytest.raises(ck.CheckpointError, match=r"audiomae:pos_embed: 33 positions, expected 1 \+ 8 .*4 x 2 patch"):
        ck.convert_audiomae_marlin(audiomae, marlin, small("paper", "model.audio.patch_size=16").model)
    shifted = {**marlin, "decoder.pos_embedding.emb": marlin["decoder.pos_embedding.emb"] + 0.01}
    with pytest.raises(ck.CheckpointError, match=r"marlin:decoder\.pos_embedding\.emb: differs .* by 0\.01"):
        ck.convert_marlin(shifted, cfg.model)


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_audiomae_marlin_is_the_union_of_the_two_conversions(variant):
    cfg = small(variant)
    am_layout, mar_layout = upstream_layout(cfg.model, audiomae_decoder_blocks=1)
    audiomae, marlin = random_state_dict(am_layout, 0), random_state_dict(mar_layout, 1)
    both, report = ck.convert_audiomae_marlin(audiomae, marlin, cfg.model)
    audio, audio_report = ck.convert_audiomae(audiomae, cfg.model)
    video, video_report = ck.convert_marlin(marlin, cfg.model)
    assert not audio.keys() & video.keys() and list(both) == [*audio, *video]
    assert all(torch.equal(both[k], {**audio, **video}[k]) for k in both)
    assert report.loaded == {**audio_report.loaded, **video_report.loaded}
    assert report.skipped == {**audio_report.skipped, **video_report.skipped}
    # Each converter fills its own part of the pretrainer and reports only its own keys.
    assert all(k.startswith("audio_encoder.") for k in audio)
    assert all(k.startswith(("video_encoder.", "video_decoder.")) for k in video)
    assert all(s.startswith(("audiomae:", "zeros (AudioMAE adds no modality token"))
               for s in [*audio_report.loaded.values(), *audio_report.skipped])
    assert all(s.startswith("marlin:") for s in [*video_report.loaded.values(), *video_report.skipped])
    with pytest.raises(ck.CheckpointError, match=r"1 upstream keys match no rule: marlin:decoder\.extra"):
        ck.convert_marlin({**marlin, "decoder.extra": torch.zeros(1)}, cfg.model)


def test_init_pretrainer_loads_the_conversion_into_a_seeded_pretrainer():
    cfg = small("official")
    am_layout, mar_layout = upstream_layout(cfg.model, audiomae_decoder_blocks=1)
    audiomae, marlin = random_state_dict(am_layout, 0), random_state_dict(mar_layout, 1)
    state = torch.random.get_rng_state()
    model, conversion, report = ck.init_pretrainer(audiomae, marlin, cfg)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is untouched
    partial, _ = ck.convert_audiomae_marlin(audiomae, marlin, cfg.model)
    assert set(report.loaded) == set(partial) == set(conversion.loaded)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in partial.items())
    again, _, _ = ck.init_pretrainer(audiomae, marlin, cfg)  # the tensors left at init come from cfg.seed
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
