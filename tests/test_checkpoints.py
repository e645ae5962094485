"""Checkpoint files, strict loading and the three weight conversions (havic-spec §13).

Synthetic checkpoints come from two places: the upstream key dumps in ``assets/keys`` (AudioMAE and
MARLIN, every key and shape) and the official HAVIC key layout, generated here from the per-module
layout documented in spec §13.2 (checked against the documented tensor and parameter counts).
A functional forward of the official networks written from the spec (§1-§10), reading the official
tensor names directly, checks that the converted networks compute the same thing.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from havic import checkpoints as ck
from havic.config import CONFIG_DIR, from_container, load_config
from havic.models import build_model
from havic.models.patching import AudioGrid
from tools import convert_weights

AVIM = "AudioVisualInteractionModule"


def small(variant: str, *overrides: str):
    """The tiny configuration (dim 32); ``deep`` below gives it the official depth and taps."""
    return load_config([CONFIG_DIR / "tiny.yaml"], [f"model.variant={variant}", *overrides])


def small_official():
    """Official variant at dim 32 with 12 blocks and taps 3/6/9/12: the official key counts."""
    return small("official", "model.depth=12", "model.taps=[3,6,9,12]")


# --------------------------------------------------------------------------------------------------
# Layouts of the foreign checkpoints, generated from their documented structure
# --------------------------------------------------------------------------------------------------


def _ln(p, d):
    return {f"{p}.weight": (d,), f"{p}.bias": (d,)}


def _linear(p, out, inp, bias=True):
    return {f"{p}.weight": (out, inp), **({f"{p}.bias": (out,)} if bias else {})}


def _qv_block(p, d, hidden, marlin_mlp):
    fc1, fc2 = ("mlp.layers.0.linear", "mlp.layers.1.linear") if marlin_mlp else ("mlp.fc1", "mlp.fc2")
    return {**_ln(f"{p}.norm1", d), f"{p}.attn.q_bias": (d,), f"{p}.attn.v_bias": (d,),
            f"{p}.attn.qkv.weight": (3 * d, d), **_linear(f"{p}.attn.proj", d, d), **_ln(f"{p}.norm2", d),
            **_linear(f"{p}.{fc1}", hidden, d), **_linear(f"{p}.{fc2}", d, hidden)}


def _timm_block(p, d, hidden):
    return {**_ln(f"{p}.norm1", d), **_linear(f"{p}.attn.qkv", 3 * d, d), **_linear(f"{p}.attn.proj", d, d),
            **_ln(f"{p}.norm2", d), **_linear(f"{p}.mlp.fc1", hidden, d), **_linear(f"{p}.mlp.fc2", d, hidden)}


def _hia(p, dd, d):
    out = {}
    for name in ("query_proj", "key_proj", "value_proj"):
        out.update(_linear(f"{p}.{name}", dd, dd))
    out.update(_linear(f"{p}.encoder2decoder", dd, d))
    for name in ("norm_q", "norm_k", "out_norm"):
        out.update(_ln(f"{p}.{name}", dd))
    return out


def official_layout(m, kind: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an official HAVIC_PT / HAVIC_FT state dict for model config ``m`` (spec §13.2)."""
    d, dd, s = m.dim, m.decoder_dim, m.num_segments
    hid, hid_d = int(d * m.mlp_ratio), int(dd * m.mlp_ratio)
    a, v = m.audio, m.video
    la = (a.num_frames // a.patch_size) * (a.num_mel_bins // a.patch_size)
    lv = (v.num_frames // v.tubelet_size) * (v.image_size // v.patch_size) ** 2
    pa, pv = a.patch_size ** 2, 3 * v.tubelet_size * v.patch_size ** 2
    taps, n = sorted(m.taps), len(m.taps)
    k = {"audio_encoder.pos_embed": (1, la, d), "audio_encoder.modality": (1, 1, d),
         "audio_encoder.cls_tokens": (1, s, d), "audio_encoder.cls_pos_embed": (1, s, d),
         **_linear("audio_encoder.patch_embed.proj", d, 1), **_ln("audio_encoder.norm", d)}
    k["audio_encoder.patch_embed.proj.weight"] = (d, 1, a.patch_size, a.patch_size)
    for i in range(m.depth):
        k.update(_qv_block(f"audio_encoder.blocks.{i}", d, hid, marlin_mlp=False))
    k.update({"visual_encoder.cls_tokens": (1, s, d), "visual_encoder.cls_pos_embed": (1, s, d),
              "visual_encoder.patch_embedding.projection.weight": (d, 3, v.tubelet_size, v.patch_size, v.patch_size),
              "visual_encoder.patch_embedding.projection.bias": (d,), "visual_encoder.pos_embedding.emb": (1, lv, d),
              **_ln("visual_encoder.norm", d)})
    for i in range(m.depth):
        k.update(_qv_block(f"visual_encoder.blocks.{i}", d, hid, marlin_mlp=True))
    k.update({f"{AVIM}.audio_mask_token": (1, 1, d), f"{AVIM}.audio_modality": (1, 1, d),
              f"{AVIM}.audio_pos_embed": (1, la, d), f"{AVIM}.visual_mask_token": (1, 1, d),
              f"{AVIM}.visual_pos_embedding.emb": (1, lv, d)})
    for stream in ("video", "audio"):
        k.update(_timm_block(f"{AVIM}.blocks.0.self_attn_{stream}", d, hid))
    for direction in ("audio_to_video", "video_to_audio"):
        p = f"{AVIM}.blocks.0.cross_attn_{direction}"
        for name in ("norm_q", "norm_k", "norm2"):
            k.update(_ln(f"{p}.{name}", d))
        for name in ("q_proj", "k_proj", "v_proj", "proj"):
            k.update(_linear(f"{p}.{name}", d, d))
        k.update({**_linear(f"{p}.mlp.fc1", hid, d), **_linear(f"{p}.mlp.fc2", d, hid)})
    k.update({**_ln(f"{AVIM}.norm_video_out", d), **_ln(f"{AVIM}.norm_audio_out", d)})
    if kind == "pretrain":
        k.update({"visual_decoder.mask_token": (1, 1, dd), "visual_decoder.enc_dec_proj.weight": (dd, d),
                  "visual_decoder.pos_embedding.emb": (1, lv, dd), **_ln("visual_decoder.norm", dd)})
        for i in range(n):
            k.update(_qv_block(f"visual_decoder.blocks.{i}", dd, hid_d, marlin_mlp=True))
        for name in [f"head_{layer}" for layer in range(1, n)] + ["head"]:
            k.update(_linear(f"visual_decoder.{name}", pv, dd))
        for t in taps:
            k.update(_hia(f"visual_decoder.HiA_{t}", dd, d))
        k.update({"audio_decoder.mask_token": (1, 1, dd), "audio_decoder.decoder_modality": (1, 1, dd),
                  "audio_decoder.decoder_pos_embed": (1, la, dd), "audio_decoder.decoder_embed.weight": (dd, d),
                  **_ln("audio_decoder.decoder_norm", dd)})
        for i in range(n):
            k.update(_qv_block(f"audio_decoder.blocks.{i}", dd, hid_d, marlin_mlp=False))
        for name in [f"decoder_pred_{layer}" for layer in range(1, n)] + ["decoder_pred"]:
            k.update(_linear(f"audio_decoder.{name}", pa, dd))
        for t in taps:
            k.update(_hia(f"audio_decoder.HiA_{t}", dd, d))
        k.update({"A2V.audio_mask_token": (1, 1, d), "A2V.audio_modality": (1, 1, d), "A2V.audio_pos_embed": (1, la, d),
                  **_linear("A2V.TokenAligner.output_layer", lv // s, la // s), **_timm_block("A2V.block", d, hid),
                  **_ln("A2V.norm", d)})
        k.update({"V2A.visual_mask_token": (1, 1, d), **_linear("V2A.TokenAligner.output_layer", la // s, lv // s),
                  **_timm_block("V2A.block", d, hid), **_ln("V2A.norm", d), "V2A.visual_pos_embedding.emb": (1, lv, d)})
    else:
        for name, width in (("classifier", 4 * d), ("classifier_audio", d), ("classifier_visual", d)):
            k.update({**_linear(f"{name}.layers.0", 2 * d, width), **_linear(f"{name}.layers.1", d, 2 * d),
                      **_linear(f"{name}.output_layer", 1, d)})
        for modality in ("Audio", "Visual"):
            for level in [*map(str, taps), "AVI"]:
                k.update({**_linear(f"{modality}TokenReducer_{level}.mlp.0", m.score_hidden, d),
                          **_linear(f"{modality}TokenReducer_{level}.mlp.2", 1, m.score_hidden)})
        k.update({"pool_a.weights": (n,), "pool_v.weights": (n,)})
    return k


def expected_official_ignored(layout: dict, kind: str) -> set[str]:
    """Official keys with no counterpart: fixed tables, the never-applied audio CLS table, dead AVIM parts."""
    out = {"visual_encoder.pos_embedding.emb", "visual_encoder.cls_pos_embed", "audio_encoder.cls_pos_embed"}
    out |= {f"{AVIM}.{n}" for n in ("audio_mask_token", "audio_modality", "audio_pos_embed", "visual_mask_token",
                                   "visual_pos_embedding.emb")}
    out |= {k for k in layout if k.startswith(f"{AVIM}.blocks.0.self_attn_")}
    if kind == "pretrain":
        out |= {"visual_decoder.pos_embedding.emb", "audio_decoder.decoder_pos_embed", "A2V.audio_pos_embed",
                "V2A.visual_pos_embedding.emb"}
    return out


def _sincos(pos: torch.Tensor, d: int) -> torch.Tensor:
    """Interleaved table written out from spec §1.3: e[2i] = sin(p w_i), e[2i+1] = cos(p w_i)."""
    w = 10000.0 ** (-torch.arange(d // 2, dtype=torch.float64) / (d // 2))
    ang = pos.to(torch.float64)[:, None] * w
    out = torch.empty(len(pos), d, dtype=torch.float64)
    out[:, 0::2], out[:, 1::2] = ang.sin(), ang.cos()
    return out.float()


def official_tables(m) -> dict[str, torch.Tensor]:
    """The fixed tables an official model holds, for the official (mel-band-major) audio grid."""
    d, dd, s = m.dim, m.decoder_dim, m.num_segments
    a, v = m.audio, m.video
    n_mel, n_time = a.num_mel_bins // a.patch_size, a.num_frames // a.patch_size
    lv = (v.num_frames // v.tubelet_size) * (v.image_size // v.patch_size) ** 2
    tok = torch.arange(n_mel * n_time)
    t, f = tok % n_time, tok // n_time  # official token k = f * n_time + t

    def audio2d(width):  # first half: time index, second half: mel-band index
        return torch.cat([_sincos(t, width // 2), _sincos(f, width // 2)], 1)[None]

    video1d = _sincos(torch.arange(lv), d)[None]
    cls = _sincos(torch.arange(s), d)[None]
    return {"visual_encoder.pos_embedding.emb": video1d, "visual_encoder.cls_pos_embed": cls,
            "audio_encoder.cls_pos_embed": cls, f"{AVIM}.audio_pos_embed": audio2d(d),
            f"{AVIM}.visual_pos_embedding.emb": video1d,
            "visual_decoder.pos_embedding.emb": _sincos(torch.arange(lv), dd)[None],
            "audio_decoder.decoder_pos_embed": audio2d(dd), "A2V.audio_pos_embed": audio2d(d),
            "V2A.visual_pos_embedding.emb": video1d}


def official_state_dict(m, kind: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random official weights (norm gains near 1) with the true fixed tables."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in official_layout(m, kind).items():
        t = torch.randn(shape, generator=g) * 0.2
        if re.search(r"norm[^.]*\.weight$", key):
            t = 1.0 + t
        sd[key] = t
    tables = official_tables(m)
    sd.update({k: v for k, v in tables.items() if k in sd})
    return sd


def upstream_layout(m, audiomae_decoder_blocks: int = 16) -> tuple[dict, dict]:
    """AudioMAE and MARLIN key -> shape for encoders of config ``m`` (the structure of the key dumps)."""
    d, dd = m.dim, m.decoder_dim
    hid, hid_d = int(d * m.mlp_ratio), int(dd * m.mlp_ratio)
    a, v = m.audio, m.video
    la = (a.num_frames // a.patch_size) * (a.num_mel_bins // a.patch_size)
    lv = (v.num_frames // v.tubelet_size) * (v.image_size // v.patch_size) ** 2
    am = {"cls_token": (1, 1, d), "pos_embed": (1, la + 1, d), "mask_token": (1, 1, 512),
          "decoder_pos_embed": (1, la + 1, 512), "patch_embed.proj.weight": (d, 1, a.patch_size, a.patch_size),
          "patch_embed.proj.bias": (d,)}
    for i in range(m.depth):
        am.update(_timm_block(f"blocks.{i}", d, hid))
    am.update({**_ln("norm", d), **_linear("decoder_embed", 512, d)})
    for i in range(audiomae_decoder_blocks):
        p = f"decoder_blocks.{i}"
        am.update({f"{p}.attn.tau": (16,), **_linear(f"{p}.attn.qkv", 1536, 512), **_linear(f"{p}.attn.proj", 512, 512),
                   **_linear(f"{p}.attn.meta_mlp.fc1", 384, 2), **_linear(f"{p}.attn.meta_mlp.fc2", 16, 384),
                   **_ln(f"{p}.norm1", 512), **_linear(f"{p}.mlp.fc1", 2048, 512), **_linear(f"{p}.mlp.fc2", 512, 2048),
                   **_ln(f"{p}.norm2", 512)})
    am.update({**_ln("decoder_norm", 512), **_linear("decoder_pred", a.patch_size ** 2, 512)})
    mar = {"encoder.patch_embedding.projection.weight": (d, 3, v.tubelet_size, v.patch_size, v.patch_size),
           "encoder.patch_embedding.projection.bias": (d,), "encoder.pos_embedding.emb": (1, lv, d),
           **_ln("encoder.norm", d)}
    for i in range(m.depth):
        mar.update(_qv_block(f"encoder.blocks.{i}", d, hid, marlin_mlp=True))
    mar.update({"decoder.mask_token": (1, 1, dd), **_ln("decoder.norm", dd), "decoder.pos_embedding.emb": (1, lv, dd)})
    for i in range(len(m.taps)):
        mar.update(_qv_block(f"decoder.blocks.{i}", dd, hid_d, marlin_mlp=True))
    mar.update({**_linear("decoder.head", 3 * v.tubelet_size * v.patch_size ** 2, dd),
                **_linear("enc_dec_proj", dd, d, bias=False)})
    return am, mar


def random_state_dict(layout: dict, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) for k, s in layout.items()}


def read_key_dump(path: Path) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            name, shape = line.split("|")
            out[name.strip()] = tuple(int(x) for x in re.findall(r"\d+", shape))
    return out


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


class Opaque:
    """A non-tensor object that a weights-only load must refuse to unpickle."""

    def __init__(self) -> None:
        self.value = 3


def tiny_sd():
    return {"a.weight": torch.randn(3, 2), "a.bias": torch.randn(3)}


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"model": sd, "epoch": 3, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}},
    lambda sd: {"state_dict": sd, "global_step": 7},
    lambda sd: {"model_state_dict": sd},
    lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
])
def test_load_state_dict_file_unwraps(tmp_path, wrap):
    sd = tiny_sd()
    torch.save(wrap(sd), tmp_path / "c.pth")
    got = ck.load_state_dict_file(tmp_path / "c.pth")
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)


def test_safetensors_round_trip_with_metadata(tmp_path):
    sd = tiny_sd()
    ck.save_safetensors(tmp_path / "w.safetensors", sd, {"config": '{"seed": 1}'})
    got = ck.load_state_dict_file(tmp_path / "w.safetensors")
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    assert ck.read_safetensors_metadata(tmp_path / "w.safetensors")["config"] == '{"seed": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary file left


@pytest.mark.parametrize("payload", [Opaque(), argparse.Namespace(lr=0.1)])
def test_pickled_objects_are_refused(tmp_path, payload):
    torch.save({"model": tiny_sd(), "args": payload}, tmp_path / "c.pth")
    with pytest.raises(ck.CheckpointError, match=r"c\.pth: refused"):
        ck.load_state_dict_file(tmp_path / "c.pth")


def test_unusable_files_are_explained(tmp_path):
    with pytest.raises(ck.CheckpointError, match="not found"):
        ck.load_state_dict_file(tmp_path / "absent.pth")
    torch.save(torch.zeros(3), tmp_path / "t.pth")
    with pytest.raises(ck.CheckpointError, match=r"t\.pth: expected a dict of tensors, found a Tensor"):
        ck.load_state_dict_file(tmp_path / "t.pth")
    torch.save({"epoch": 3, "optimizer": {}}, tmp_path / "o.pth")
    with pytest.raises(ck.CheckpointError, match=r"o\.pth: no state dict found.*epoch \(int\)"):
        ck.load_state_dict_file(tmp_path / "o.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ck.CheckpointError, match=r"junk\.pth: not a readable torch checkpoint"):
        ck.load_state_dict_file(tmp_path / "junk.pth")


# --------------------------------------------------------------------------------------------------
# Strict loading
# --------------------------------------------------------------------------------------------------


def net():
    return nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3))


def test_load_with_report_loads_everything():
    src, dst = net(), net()
    report = ck.load_with_report(dst, src.state_dict())
    assert sorted(report.loaded) == sorted(src.state_dict()) and report.ok
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def test_load_with_report_names_every_problem_and_loads_nothing():
    dst = net()
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    sd = net().state_dict()
    del sd["1.bias"]
    sd["2.weight"] = torch.zeros(1)
    sd["0.weight"] = torch.zeros(4, 2)
    with pytest.raises(ck.CheckpointError) as err:
        ck.load_with_report(dst, sd)
    msg = str(err.value)
    assert "missing from the checkpoint (1): 1.bias" in msg
    assert "unexpected in the checkpoint (1): 2.weight" in msg
    assert "0.weight checkpoint [4, 2] vs model [3, 2]" in msg
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())


def test_load_with_report_expected_missing_and_ignored():
    dst = net()
    norm_before = dst[1].weight.detach().clone()
    sd = {k: v for k, v in net().state_dict().items() if k.startswith("0.")}
    sd["extra.table"] = torch.zeros(5)
    report = ck.load_with_report(dst, sd, expected_missing=["1.*"], ignored={"extra.*": "fixed table"})
    assert report.missing == ["1.weight", "1.bias"] and report.unexplained_missing == []
    assert report.ignored == {"extra.table": "fixed table"}
    assert torch.equal(dst[1].weight, norm_before) and torch.equal(dst[0].weight, sd["0.weight"])
    text = report.summary()
    assert "loaded 2 tensors; left at their current values 2; ignored 1" in text and "fixed table" in text


# --------------------------------------------------------------------------------------------------
# Official HAVIC -> official variant
# --------------------------------------------------------------------------------------------------

FULL_DOCUMENTED_SHAPES = {  # spec §13.2
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
    assert len(layout) == n_tensors  # spec §13.2
    assert sum(math.prod(s) for s in layout.values()) == n_params  # spec §15, every official parameter
    for key, shape in FULL_DOCUMENTED_SHAPES.items():
        assert key not in layout or layout[key] == shape, key
    sd = {k: torch.zeros(()).expand(s) for k, s in layout.items()}  # shapes only, no memory
    ours, ignored = ck.convert_official_havic(sd, kind)
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
    ours, ignored = ck.convert_official_havic(sd, kind)
    assert set(ignored) == expected_official_ignored(layout, kind) and all(ignored.values())
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
        ck.convert_official_havic(pt, "detector")
    ft = {k: torch.zeros(s) for k, s in official_layout(m, "detector").items()}
    ft["audio_encoder.blocks.0.attn.k_bias"] = torch.zeros(32)
    with pytest.raises(ck.CheckpointError, match=r"1 official keys match no rule.*attn\.k_bias"):
        ck.convert_official_havic(ft, "detector")
    ft = {k: torch.zeros(s) for k, s in official_layout(m, "detector").items()}
    ft["audio_encoder.modality"] = torch.zeros(2, 1, 32)
    with pytest.raises(ck.CheckpointError, match=r"audio_encoder\.modality: .*\[2, 1, 32\]"):
        ck.convert_official_havic(ft, "detector")


# A functional forward of the official networks, written from spec §1-§10 on official tensor names.


def _f_ln(x, sd, p):
    return F.layer_norm(x, x.shape[-1:], sd[f"{p}.weight"], sd[f"{p}.bias"], eps=1e-5)


def _f_lin(x, sd, p):
    return F.linear(x, sd[f"{p}.weight"], sd.get(f"{p}.bias"))


def _f_attend(q, k, v, heads):
    """softmax(q k^T / sqrt(d_head)) v over heads, explicit."""
    b, n, c = q.shape
    q, k, v = (t.reshape(b, -1, heads, c // heads).transpose(1, 2) for t in (q, k, v))
    w = (q @ k.transpose(-1, -2) / math.sqrt(c // heads)).softmax(-1)
    return (w @ v).transpose(1, 2).reshape(b, n, c)


def _f_block(x, sd, p, heads):
    """Pre-norm block; the fused qkv bias is [q_bias, 0, v_bias] when the block has q/v biases."""
    if f"{p}.attn.q_bias" in sd:
        bias = torch.cat([sd[f"{p}.attn.q_bias"], torch.zeros_like(sd[f"{p}.attn.q_bias"]), sd[f"{p}.attn.v_bias"]])
    else:
        bias = sd[f"{p}.attn.qkv.bias"]
    q, k, v = F.linear(_f_ln(x, sd, f"{p}.norm1"), sd[f"{p}.attn.qkv.weight"], bias).chunk(3, dim=-1)
    x = x + _f_lin(_f_attend(q, k, v, heads), sd, f"{p}.attn.proj")
    fc1, fc2 = ("mlp.fc1", "mlp.fc2") if f"{p}.mlp.fc1.weight" in sd else ("mlp.layers.0.linear", "mlp.layers.1.linear")
    return x + _f_lin(F.gelu(_f_lin(_f_ln(x, sd, f"{p}.norm2"), sd, f"{p}.{fc1}")), sd, f"{p}.{fc2}")


def _f_encoder(tokens, sd, p, cls, m):
    """Per-segment CLS insertion, blocks, taps through the final norm: {tap: (B, S * (1 + P), D)}."""
    b, n, d = tokens.shape
    s = m.num_segments
    x = torch.cat([cls.expand(b, s, d)[:, :, None], tokens.view(b, s, n // s, d)], 2).flatten(1, 2)
    out = {}
    for i in range(m.depth):
        x = _f_block(x, sd, f"{p}.blocks.{i}", m.num_heads)
        if i + 1 in m.taps:
            out[i + 1] = _f_ln(x, sd, f"{p}.norm")
    return out


def _f_video_tokens(video, sd):
    w = sd["visual_encoder.patch_embedding.projection.weight"]
    x = F.conv3d(video, w, sd["visual_encoder.patch_embedding.projection.bias"], stride=w.shape[2:])
    return x.flatten(2).transpose(1, 2) + sd["visual_encoder.pos_embedding.emb"]


def _f_audio_tokens(audio, sd):
    """(B, T, F) -> transposed to (B, 1, F, T) -> mel-band-major tokens (spec §2.2)."""
    w = sd["audio_encoder.patch_embed.proj.weight"]
    x = F.conv2d(audio.transpose(1, 2)[:, None], w, sd["audio_encoder.patch_embed.proj.bias"], stride=w.shape[-1])
    return x.flatten(2).transpose(1, 2) + sd["audio_encoder.pos_embed"] + sd["audio_encoder.modality"]


def _f_strip(x, s):
    b, n, d = x.shape
    return x.view(b, s, n // s, d)[:, :, 1:].flatten(1, 2)


def _f_cross_modal(x, y, sd, p, heads):
    q = _f_lin(_f_ln(x, sd, f"{p}.norm_q"), sd, f"{p}.q_proj")
    k = _f_lin(_f_ln(y, sd, f"{p}.norm_k"), sd, f"{p}.k_proj")
    h = x + _f_lin(_f_attend(q, k, _f_lin(y, sd, f"{p}.v_proj"), heads), sd, f"{p}.proj")
    return h + _f_lin(F.gelu(_f_lin(_f_ln(h, sd, f"{p}.norm2"), sd, f"{p}.mlp.fc1")), sd, f"{p}.mlp.fc2")


def _f_interaction(v, a, sd, m):
    """Double residual (spec §5): X + CMA(X, Y), both directions on the pre-interaction streams."""
    v2 = v + _f_cross_modal(v, a, sd, f"{AVIM}.blocks.0.cross_attn_audio_to_video", m.fusion_heads)
    a2 = a + _f_cross_modal(a, v, sd, f"{AVIM}.blocks.0.cross_attn_video_to_audio", m.fusion_heads)
    return _f_ln(v2, sd, f"{AVIM}.norm_video_out"), _f_ln(a2, sd, f"{AVIM}.norm_audio_out")


def _f_encode(sd, video_tokens, audio_tokens, m):
    v_cls = sd["visual_encoder.cls_tokens"][0] + sd["visual_encoder.cls_pos_embed"][0]
    a_cls = sd["audio_encoder.cls_tokens"][0]  # the audio CLS positions are never added (spec §2.3)
    v = _f_encoder(video_tokens, sd, "visual_encoder", v_cls, m)
    a = _f_encoder(audio_tokens, sd, "audio_encoder", a_cls, m)
    vi, ai = _f_interaction(v[max(m.taps)], a[max(m.taps)], sd, m)
    return v, a, _f_strip(vi, m.num_segments), _f_strip(ai, m.num_segments)


def _f_reduce(x, sd, p):
    w = _f_lin(F.relu(_f_lin(x, sd, f"{p}.mlp.0")), sd, f"{p}.mlp.2").softmax(dim=1)
    return (w * x).sum(1)


def _f_flexible_mlp(x, sd, p):
    for i in (0, 1):
        x = F.relu(_f_lin(x, sd, f"{p}.layers.{i}"))
    return _f_lin(x, sd, f"{p}.output_layer")[:, 0]


def official_detector_forward(sd, video, audio, m):
    s, taps = m.num_segments, sorted(m.taps)
    v, a, vi, ai = _f_encode(sd, _f_video_tokens(video, sd), _f_audio_tokens(audio, sd), m)
    wa, wv = sd["pool_a.weights"].softmax(0), sd["pool_v.weights"].softmax(0)
    a_agg = sum(wa[j] * _f_reduce(_f_strip(a[t], s), sd, f"AudioTokenReducer_{t}") for j, t in enumerate(taps))
    v_agg = sum(wv[j] * _f_reduce(_f_strip(v[t], s), sd, f"VisualTokenReducer_{t}") for j, t in enumerate(taps))
    a_inter, v_inter = _f_reduce(ai, sd, "AudioTokenReducer_AVI"), _f_reduce(vi, sd, "VisualTokenReducer_AVI")
    feat = torch.cat([a_agg, v_agg, a_inter, v_inter], 1)
    return (_f_flexible_mlp(feat, sd, "classifier"), _f_flexible_mlp(a_agg, sd, "classifier_audio"),
            _f_flexible_mlp(v_agg, sd, "classifier_visual"))


def _f_scatter(x, ids, n, token):
    b, _, d = x.shape
    out = token.reshape(1, 1, d).expand(b, n, d).clone()
    out[torch.arange(b)[:, None], ids] = x
    return out


def _f_hia(x, mem, sd, p, heads):
    """HiA (spec §1.4): residual on the normalised query, no output projection."""
    xq = _f_ln(x, sd, f"{p}.norm_q")
    mk = _f_ln(_f_lin(mem, sd, f"{p}.encoder2decoder"), sd, f"{p}.norm_k")
    q, k, v = (_f_lin(t, sd, f"{p}.{n}") for t, n in ((xq, "query_proj"), (mk, "key_proj"), (mk, "value_proj")))
    o = _f_attend(q, k, v, heads)
    return _f_ln(xq + o, sd, f"{p}.out_norm")


def _f_decoder(x, feats, sd, p, m, norm, preds):
    taps, n = sorted(m.taps), len(m.taps)
    out = []
    for layer in range(n):  # layer l reads its tap and every shallower one, deepest first
        for t in reversed(taps[: n - layer]):
            x = _f_hia(x, feats[t], sd, f"{p}.HiA_{t}", m.decoder_heads)
        x = _f_block(x, sd, f"{p}.blocks.{layer}", m.decoder_heads)
        out.append(_f_lin(_f_ln(x, sd, norm), sd, preds[layer]))
    return out


def _f_translate(x, sd, p, m):
    """Per-segment token aligner along the token axis, then a timm block and a norm (spec §7)."""
    b, n, d = x.shape
    s = m.num_segments
    x = _f_lin(x.view(b, s, n // s, d).transpose(2, 3), sd, f"{p}.TokenAligner.output_layer")
    x = x.transpose(2, 3).reshape(b, -1, d)
    return _f_ln(_f_block(x, sd, f"{p}.block", m.semantic_heads), sd, f"{p}.norm")


def official_pretrainer_forward(sd, video, audio, ids_video, ids_audio, m):
    s, n = m.num_segments, len(m.taps)
    vt, at = _f_video_tokens(video, sd), _f_audio_tokens(audio, sd)
    gather = lambda x, ids: x.gather(1, ids[..., None].expand(-1, -1, x.shape[-1]))  # noqa: E731
    v, a, vi, ai = _f_encode(sd, gather(vt, ids_video), gather(at, ids_audio), m)
    v_feats = {t: _f_strip(x, s) for t, x in v.items()}
    a_feats = {t: _f_strip(x, s) for t, x in a.items()}
    xv = _f_lin(vi, sd, "visual_decoder.enc_dec_proj")
    xv = _f_scatter(xv, ids_video, vt.shape[1], sd["visual_decoder.mask_token"])
    xv = xv + sd["visual_decoder.pos_embedding.emb"]
    video_preds = _f_decoder(xv, v_feats, sd, "visual_decoder", m, "visual_decoder.norm",
                             [f"visual_decoder.head_{i}" for i in range(1, n)] + ["visual_decoder.head"])
    xa = _f_lin(ai, sd, "audio_decoder.decoder_embed")
    xa = _f_scatter(xa, ids_audio, at.shape[1], sd["audio_decoder.mask_token"])
    xa = xa + sd["audio_decoder.decoder_modality"] + sd["audio_decoder.decoder_pos_embed"]
    audio_preds = _f_decoder(xa, a_feats, sd, "audio_decoder", m, "audio_decoder.decoder_norm",
                             [f"audio_decoder.decoder_pred_{i}" for i in range(1, n)] + ["audio_decoder.decoder_pred"])
    a2v = _f_scatter(ai, ids_audio, at.shape[1], sd["A2V.audio_mask_token"])
    a2v = a2v + sd["A2V.audio_modality"] + sd["A2V.audio_pos_embed"]
    v2a = _f_scatter(vi, ids_video, vt.shape[1], sd["V2A.visual_mask_token"]) + sd["V2A.visual_pos_embedding.emb"]
    tv, ta, _, _ = _f_encode(sd, vt, at, m)
    last = max(m.taps)
    return {"video_preds": video_preds, "audio_preds": audio_preds, "video_from_audio": _f_translate(a2v, sd, "A2V", m),
            "audio_from_video": _f_translate(v2a, sd, "V2A", m), "video_teacher": _f_strip(tv[last], s),
            "audio_teacher": _f_strip(ta[last], s)}


def small_inputs(batch: int = 2):
    g = torch.Generator().manual_seed(3)
    return torch.rand(batch, 3, 4, 32, 32, generator=g), torch.randn(batch, 64, 32, generator=g)


def test_converted_detector_matches_the_official_forward():
    cfg = small_official()
    sd = official_state_dict(cfg.model, "detector")
    model = build_model(cfg.model, "detector").eval()
    ck.load_with_report(model, ck.convert_official_havic(sd, "detector")[0])
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
    ck.load_with_report(model, ck.convert_official_havic(sd, "pretrain")[0])
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


# --------------------------------------------------------------------------------------------------
# AudioMAE + MARLIN -> pretrainer initialisation
# --------------------------------------------------------------------------------------------------


def expected_source(target: str) -> tuple[str, str]:
    """(checkpoint, key) each of our tensors should come from, by the intended mapping (spec §13.3)."""
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


def check_audiomae_marlin(partial, report, audiomae, marlin, model_cfg, shapes):
    """Every upstream tensor accounted for, every converted tensor equal to its intended source."""
    expected_keys = {k for k in shapes if not any(fnmatch.fnmatchcase(k, p) for p in ck.PRETRAIN_INIT_ONLY)}
    assert set(partial) == expected_keys
    sources = {"audiomae": audiomae, "marlin": marlin}
    d = audiomae["norm.weight"].numel()
    for target, value in partial.items():
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
    used = {re.sub(r"\[.*|\s.*", "", s) for s in report.loaded.values()}
    skipped = {re.sub(r"\[.*", "", s) for s in report.skipped}
    every = {f"audiomae:{k}" for k in audiomae} | {f"marlin:{k}" for k in marlin}
    assert used | skipped == every and all(report.skipped.values())
    expected_skipped = ({f"audiomae:{k}" for k in audiomae if not k.startswith(("patch_embed.", "blocks.", "norm."))}
                        | {f"audiomae:{k}[{d}:{2 * d}]" for k in audiomae
                           if re.fullmatch(r"blocks\.\d+\.attn\.qkv\.bias", k)}
                        | {"marlin:encoder.pos_embedding.emb", "marlin:decoder.pos_embedding.emb"})
    assert set(report.skipped) == expected_skipped


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
    assert len(partial) == 384  # 160 from AudioMAE (incl. 24 split biases) + 224 from MARLIN (4 heads)
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
    reference = _f_lin(_f_attend(q, k, v, cfg.model.num_heads), audiomae, f"{p}.proj")
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
        ck.convert_audiomae_marlin(audiomae, marlin, small("paper", "model.audio.patch_size=16").model)


# --------------------------------------------------------------------------------------------------
# Pretrainer -> detector, and the command-line tool
# --------------------------------------------------------------------------------------------------


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


def test_tool_init_pretrain_then_detector(tmp_path, capsys):
    cfg = small("official")
    am_layout, mar_layout = upstream_layout(cfg.model, audiomae_decoder_blocks=1)
    audiomae, marlin = random_state_dict(am_layout, 0), random_state_dict(mar_layout, 1)
    torch.save({"model": audiomae}, tmp_path / "audiomae.pth")
    torch.save(marlin, tmp_path / "marlin.pt")
    tiny = str(CONFIG_DIR / "tiny.yaml")
    pt, det = tmp_path / "pt.safetensors", tmp_path / "det.safetensors"
    rc = convert_weights.main(["init-pretrain", "--audiomae", str(tmp_path / "audiomae.pth"), "--marlin",
                               str(tmp_path / "marlin.pt"), "--out", str(pt), tiny, "model.variant=official"])
    out = capsys.readouterr().out
    assert rc == 0 and "skipped (AudioMAE's decoder" in out and "left at their current values" in out
    meta = ck.read_safetensors_metadata(pt)
    stored = from_container(json.loads(meta["config"]))
    assert meta["kind"] == "pretrain" and stored.model.variant == "official" and stored.model.dim == 32
    weights = ck.load_state_dict_file(pt)
    assert torch.equal(weights["audio_encoder.patch_embed.weight"], audiomae["patch_embed.proj.weight"].transpose(2, 3))
    assert torch.equal(weights["video_decoder.heads.1.bias"], marlin["decoder.head.bias"])
    assert convert_weights.main(["pretrain-to-detector", "--in", str(pt), "--out", str(det)]) == 0
    assert "using the config stored in" in capsys.readouterr().out
    detector = ck.load_state_dict_file(det)
    assert torch.equal(detector["video_encoder.blocks.1.attn.qkv.weight"], marlin["encoder.blocks.1.attn.qkv.weight"])
    assert "head.layers.0.weight" in detector and "video_decoder.heads.0.weight" not in detector


def test_tool_official_conversion(tmp_path, capsys):
    cfg = small_official()
    sd = official_state_dict(cfg.model, "detector")
    torch.save(sd, tmp_path / "ft.pth")
    out = tmp_path / "ft.safetensors"
    args = ["official", "--in", str(tmp_path / "ft.pth"), "--kind", "detector", "--out", str(out),
            str(CONFIG_DIR / "tiny.yaml"), "model.depth=12", "model.taps=[3,6,9,12]"]
    assert convert_weights.main(args) == 0
    text = capsys.readouterr().out
    assert "ignored 32" in text and "dead self-attention block" in text
    ours, _ = ck.convert_official_havic(sd, "detector")
    got = ck.load_state_dict_file(out)
    assert got.keys() == ours.keys() and all(torch.equal(got[k], ours[k]) for k in ours)
    assert convert_weights.main([*args[:4], "pretrain", *args[5:]]) == 1  # wrong kind: explained, no output
    assert "use kind='detector'" in capsys.readouterr().err


def test_weights_file_round_trip_carries_config_and_kind(tmp_path):
    cfg = load_config([CONFIG_DIR / "tiny.yaml"], ["model.variant=official"])
    model = build_model(cfg.model, "detector")
    path = ck.save_weights(tmp_path / "w.safetensors", model.state_dict(), cfg, "detector", note="x")
    w = ck.read_weights(path)
    assert w.kind == "detector" and w.config.model.variant == "official" and w.metadata["note"] == "x"
    assert w.state_dict.keys() == model.state_dict().keys()
    assert all(torch.equal(w.state_dict[k], v) for k, v in model.state_dict().items())


def test_read_weights_rejects_foreign_files_by_name(tmp_path):
    plain = tmp_path / "plain.pth"
    torch.save({"classifier.output_layer.weight": torch.zeros(1, 768)}, plain)
    with pytest.raises(ck.CheckpointError, match=r"plain\.pth.*convert_weights.py official"):
        ck.read_weights(plain)
    bare = tmp_path / "bare.safetensors"
    ck.save_safetensors(bare, {"a": torch.zeros(1)}, {})
    with pytest.raises(ck.CheckpointError, match="without havic metadata"):
        ck.read_weights(bare)
    with pytest.raises(ck.CheckpointError, match="no such"):
        ck.read_weights(tmp_path / "missing.safetensors")
