"""Synthetic foreign checkpoints for the checkpoint tests: official HAVIC, AudioMAE and MARLIN layouts.

They come from two places: the upstream key dumps in ``assets/keys`` (AudioMAE and MARLIN, every key
and shape) and the official HAVIC key layout, generated here from the per-module layout documented
in docs/official-differences.md#official-key-layout (checked against the documented tensor and
parameter counts by the tests).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from havic.config import CONFIG_DIR, load_config

AVIM = "AudioVisualInteractionModule"


def small(variant: str, *overrides: str):
    """The tiny configuration (dim 32); ``deep`` below gives it the official depth and taps."""
    return load_config([CONFIG_DIR / "tiny.yaml"], [f"model.variant={variant}", *overrides])


def small_official():
    """Official variant at dim 32 with 12 blocks and taps 3/6/9/12: the official key counts."""
    return small("official", "model.depth=12", "model.taps=[3,6,9,12]")


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
    """Key -> shape of an official HAVIC_PT / HAVIC_FT state dict for model config ``m``.

    See docs/official-differences.md#official-key-layout.
    """
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
    """Interleaved table, e[2i] = sin(p w_i), e[2i+1] = cos(p w_i).

    Written out from docs/official-differences.md#sin-cos-tables.
    """
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


def marlin_table(n: int, d: int) -> torch.Tensor:
    """MARLIN's ``SinCosPositionalEmbedding`` as marlin-pytorch builds it (float32): (1, n, d)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    table = pos / torch.tensor(10000).pow(2 * torch.div(torch.arange(d), 2, rounding_mode="trunc") / d)
    table[:, 0::2], table[:, 1::2] = table[:, 0::2].sin(), table[:, 1::2].cos()
    return table[None]


def random_state_dict(layout: dict, seed: int) -> dict[str, torch.Tensor]:
    """N(0, 1) tensors for a layout; MARLIN's fixed tables (``*.pos_embedding.emb``) hold their true values."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(s, generator=g) for k, s in layout.items()}
    sd.update({k: marlin_table(*s[1:]) for k, s in layout.items() if k.endswith(".pos_embedding.emb")})
    return sd


def read_key_dump(path: Path) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            name, shape = line.split("|")
            out[name.strip()] = tuple(int(x) for x in re.findall(r"\d+", shape))
    return out
