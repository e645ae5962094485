"""A functional forward of the official networks on official tensor names.

Written from the model sections of docs/official-differences.md, "Attention and blocks" to "Detector".

It reads an official HAVIC state dict directly, so comparing it with our converted networks checks
that the conversion keeps what the networks compute.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from checkpoint_layouts import AVIM

def f_ln(x, sd, p):
    return F.layer_norm(x, x.shape[-1:], sd[f"{p}.weight"], sd[f"{p}.bias"], eps=1e-5)


def f_lin(x, sd, p):
    return F.linear(x, sd[f"{p}.weight"], sd.get(f"{p}.bias"))


def f_attend(q, k, v, heads):
    """softmax(q k^T / sqrt(d_head)) v over heads, explicit."""
    b, n, c = q.shape
    q, k, v = (t.reshape(b, -1, heads, c // heads).transpose(1, 2) for t in (q, k, v))
    w = (q @ k.transpose(-1, -2) / math.sqrt(c // heads)).softmax(-1)
    return (w @ v).transpose(1, 2).reshape(b, n, c)


def f_block(x, sd, p, heads):
    """Pre-norm block; the fused qkv bias is [q_bias, 0, v_bias] when the block has q/v biases."""
    if f"{p}.attn.q_bias" in sd:
        bias = torch.cat([sd[f"{p}.attn.q_bias"], torch.zeros_like(sd[f"{p}.attn.q_bias"]), sd[f"{p}.attn.v_bias"]])
    else:
        bias = sd[f"{p}.attn.qkv.bias"]
    q, k, v = F.linear(f_ln(x, sd, f"{p}.norm1"), sd[f"{p}.attn.qkv.weight"], bias).chunk(3, dim=-1)
    x = x + f_lin(f_attend(q, k, v, heads), sd, f"{p}.attn.proj")
    fc1, fc2 = ("mlp.fc1", "mlp.fc2") if f"{p}.mlp.fc1.weight" in sd else ("mlp.layers.0.linear", "mlp.layers.1.linear")
    return x + f_lin(F.gelu(f_lin(f_ln(x, sd, f"{p}.norm2"), sd, f"{p}.{fc1}")), sd, f"{p}.{fc2}")


def f_encoder(tokens, sd, p, cls, m):
    """Per-segment CLS insertion, blocks, taps through the final norm: {tap: (B, S * (1 + P), D)}."""
    b, n, d = tokens.shape
    s = m.num_segments
    x = torch.cat([cls.expand(b, s, d)[:, :, None], tokens.view(b, s, n // s, d)], 2).flatten(1, 2)
    out = {}
    for i in range(m.depth):
        x = f_block(x, sd, f"{p}.blocks.{i}", m.num_heads)
        if i + 1 in m.taps:
            out[i + 1] = f_ln(x, sd, f"{p}.norm")
    return out


def f_video_tokens(video, sd):
    w = sd["visual_encoder.patch_embedding.projection.weight"]
    x = F.conv3d(video, w, sd["visual_encoder.patch_embedding.projection.bias"], stride=w.shape[2:])
    return x.flatten(2).transpose(1, 2) + sd["visual_encoder.pos_embedding.emb"]


def f_audio_tokens(audio, sd):
    """(B, T, F) -> transposed to (B, 1, F, T) -> mel-band-major tokens.

    See docs/official-differences.md#patch-embeddings-and-token-order.
    """
    w = sd["audio_encoder.patch_embed.proj.weight"]
    x = F.conv2d(audio.transpose(1, 2)[:, None], w, sd["audio_encoder.patch_embed.proj.bias"], stride=w.shape[-1])
    return x.flatten(2).transpose(1, 2) + sd["audio_encoder.pos_embed"] + sd["audio_encoder.modality"]


def f_strip(x, s):
    b, n, d = x.shape
    return x.view(b, s, n // s, d)[:, :, 1:].flatten(1, 2)


def f_cross_modal(x, y, sd, p, heads):
    q = f_lin(f_ln(x, sd, f"{p}.norm_q"), sd, f"{p}.q_proj")
    k = f_lin(f_ln(y, sd, f"{p}.norm_k"), sd, f"{p}.k_proj")
    h = x + f_lin(f_attend(q, k, f_lin(y, sd, f"{p}.v_proj"), heads), sd, f"{p}.proj")
    return h + f_lin(F.gelu(f_lin(f_ln(h, sd, f"{p}.norm2"), sd, f"{p}.mlp.fc1")), sd, f"{p}.mlp.fc2")


def f_interaction(v, a, sd, m):
    """Double residual: X + CMA(X, Y), both directions on the pre-interaction streams.

    See docs/official-differences.md#audio-visual-fusion.
    """
    v2 = v + f_cross_modal(v, a, sd, f"{AVIM}.blocks.0.cross_attn_audio_to_video", m.fusion_heads)
    a2 = a + f_cross_modal(a, v, sd, f"{AVIM}.blocks.0.cross_attn_video_to_audio", m.fusion_heads)
    return f_ln(v2, sd, f"{AVIM}.norm_video_out"), f_ln(a2, sd, f"{AVIM}.norm_audio_out")


def f_encode(sd, video_tokens, audio_tokens, m):
    v_cls = sd["visual_encoder.cls_tokens"][0] + sd["visual_encoder.cls_pos_embed"][0]
    # The audio CLS positions are never added (docs/official-differences.md#segment-cls-tokens).
    a_cls = sd["audio_encoder.cls_tokens"][0]
    v = f_encoder(video_tokens, sd, "visual_encoder", v_cls, m)
    a = f_encoder(audio_tokens, sd, "audio_encoder", a_cls, m)
    vi, ai = f_interaction(v[max(m.taps)], a[max(m.taps)], sd, m)
    return v, a, f_strip(vi, m.num_segments), f_strip(ai, m.num_segments)


def f_reduce(x, sd, p):
    w = f_lin(F.relu(f_lin(x, sd, f"{p}.mlp.0")), sd, f"{p}.mlp.2").softmax(dim=1)
    return (w * x).sum(1)


def f_flexible_mlp(x, sd, p):
    for i in (0, 1):
        x = F.relu(f_lin(x, sd, f"{p}.layers.{i}"))
    return f_lin(x, sd, f"{p}.output_layer")[:, 0]


def official_detector_forward(sd, video, audio, m):
    s, taps = m.num_segments, sorted(m.taps)
    v, a, vi, ai = f_encode(sd, f_video_tokens(video, sd), f_audio_tokens(audio, sd), m)
    wa, wv = sd["pool_a.weights"].softmax(0), sd["pool_v.weights"].softmax(0)
    a_agg = sum(wa[j] * f_reduce(f_strip(a[t], s), sd, f"AudioTokenReducer_{t}") for j, t in enumerate(taps))
    v_agg = sum(wv[j] * f_reduce(f_strip(v[t], s), sd, f"VisualTokenReducer_{t}") for j, t in enumerate(taps))
    a_inter, v_inter = f_reduce(ai, sd, "AudioTokenReducer_AVI"), f_reduce(vi, sd, "VisualTokenReducer_AVI")
    feat = torch.cat([a_agg, v_agg, a_inter, v_inter], 1)
    return (f_flexible_mlp(feat, sd, "classifier"), f_flexible_mlp(a_agg, sd, "classifier_audio"),
            f_flexible_mlp(v_agg, sd, "classifier_visual"))


def f_scatter(x, ids, n, token):
    b, _, d = x.shape
    out = token.reshape(1, 1, d).expand(b, n, d).clone()
    out[torch.arange(b)[:, None], ids] = x
    return out


def f_hia(x, mem, sd, p, heads):
    """HiA: residual on the normalised query, no output projection.

    See docs/official-differences.md#decoder-cross-attention.
    """
    xq = f_ln(x, sd, f"{p}.norm_q")
    mk = f_ln(f_lin(mem, sd, f"{p}.encoder2decoder"), sd, f"{p}.norm_k")
    q, k, v = (f_lin(t, sd, f"{p}.{n}") for t, n in ((xq, "query_proj"), (mk, "key_proj"), (mk, "value_proj")))
    o = f_attend(q, k, v, heads)
    return f_ln(xq + o, sd, f"{p}.out_norm")


def f_decoder(x, feats, sd, p, m, norm, preds):
    taps, n = sorted(m.taps), len(m.taps)
    out = []
    for layer in range(n):  # layer l reads its tap and every shallower one, deepest first
        for t in reversed(taps[: n - layer]):
            x = f_hia(x, feats[t], sd, f"{p}.HiA_{t}", m.decoder_heads)
        x = f_block(x, sd, f"{p}.blocks.{layer}", m.decoder_heads)
        out.append(f_lin(f_ln(x, sd, norm), sd, preds[layer]))
    return out


def f_translate(x, sd, p, m):
    """Per-segment token aligner along the token axis, then a timm block and a norm.

    See docs/official-differences.md#semantic-translators.
    """
    b, n, d = x.shape
    s = m.num_segments
    x = f_lin(x.view(b, s, n // s, d).transpose(2, 3), sd, f"{p}.TokenAligner.output_layer")
    x = x.transpose(2, 3).reshape(b, -1, d)
    return f_ln(f_block(x, sd, f"{p}.block", m.semantic_heads), sd, f"{p}.norm")


def official_pretrainer_forward(sd, video, audio, ids_video, ids_audio, m):
    s, n = m.num_segments, len(m.taps)
    vt, at = f_video_tokens(video, sd), f_audio_tokens(audio, sd)
    gather = lambda x, ids: x.gather(1, ids[..., None].expand(-1, -1, x.shape[-1]))  # noqa: E731
    v, a, vi, ai = f_encode(sd, gather(vt, ids_video), gather(at, ids_audio), m)
    v_feats = {t: f_strip(x, s) for t, x in v.items()}
    a_feats = {t: f_strip(x, s) for t, x in a.items()}
    xv = f_lin(vi, sd, "visual_decoder.enc_dec_proj")
    xv = f_scatter(xv, ids_video, vt.shape[1], sd["visual_decoder.mask_token"])
    xv = xv + sd["visual_decoder.pos_embedding.emb"]
    video_preds = f_decoder(xv, v_feats, sd, "visual_decoder", m, "visual_decoder.norm",
                             [f"visual_decoder.head_{i}" for i in range(1, n)] + ["visual_decoder.head"])
    xa = f_lin(ai, sd, "audio_decoder.decoder_embed")
    xa = f_scatter(xa, ids_audio, at.shape[1], sd["audio_decoder.mask_token"])
    xa = xa + sd["audio_decoder.decoder_modality"] + sd["audio_decoder.decoder_pos_embed"]
    audio_preds = f_decoder(xa, a_feats, sd, "audio_decoder", m, "audio_decoder.decoder_norm",
                             [f"audio_decoder.decoder_pred_{i}" for i in range(1, n)] + ["audio_decoder.decoder_pred"])
    a2v = f_scatter(ai, ids_audio, at.shape[1], sd["A2V.audio_mask_token"])
    a2v = a2v + sd["A2V.audio_modality"] + sd["A2V.audio_pos_embed"]
    v2a = f_scatter(vi, ids_video, vt.shape[1], sd["V2A.visual_mask_token"]) + sd["V2A.visual_pos_embedding.emb"]
    tv, ta, _, _ = f_encode(sd, vt, at, m)
    last = max(m.taps)
    return {"video_preds": video_preds, "audio_preds": audio_preds, "video_from_audio": f_translate(a2v, sd, "A2V", m),
            "audio_from_video": f_translate(v2a, sd, "V2A", m), "video_teacher": f_strip(tv[last], s),
            "audio_teacher": f_strip(ta[last], s)}


def small_inputs(batch: int = 2):
    g = torch.Generator().manual_seed(3)
    return torch.rand(batch, 3, 4, 32, 32, generator=g), torch.randn(batch, 64, 32, generator=g)
