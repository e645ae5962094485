"""Reference forwards of the upstream encoders, written from their released code, on upstream key names.

* AudioMAE (facebookresearch/AudioMAE, ``models_mae.py``, ``mae_vit_base_patch16``): the fbank
  image (B, 1, T, F) -> Conv2d patches in time-major order + ``pos_embed[1:]``; the global CLS token
  ``cls_token + pos_embed[:1]`` in front; timm blocks with a full qkv bias and LayerNorm eps 1e-6;
  the final ``norm``. Its fixed table is MAE's 2-D sin-cos: all sines before all cosines, the first
  half of the width encoding the mel column, the second half the time row.
* MARLIN (marlin-pytorch 0.3.4, ``MarlinEncoder.extract_features``): Conv3d tubelets + its fixed
  1-D table (float32, interleaved); blocks with q/v biases and LayerNorm eps 1e-5; the final norm.

The weights come from :func:`realistic_state_dict`: random, at the scale of trained ViT weights, so
that features stay in a sensible range and relative errors mean something.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from einops import rearrange

from official_forward import f_attend, f_lin

AUDIOMAE_LN_EPS = 1e-6
MARLIN_LN_EPS = 1e-5


def mae_sincos_2d(dim: int, rows: int, cols: int) -> torch.Tensor:
    """AudioMAE's ``get_2d_sincos_pos_embed_flexible(dim, (rows, cols), cls_token=True)``: (1 + rows * cols, dim)."""

    def one_axis(pos: torch.Tensor, width: int) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(width // 2, dtype=torch.float64) / (width / 2.0))
        out = pos.to(torch.float64)[:, None] * omega
        return torch.cat([out.sin(), out.cos()], dim=1)

    row, col = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    table = torch.cat([one_axis(col.flatten(), dim // 2), one_axis(row.flatten(), dim // 2)], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).float()


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """||ours - reference|| / ||reference|| over all values."""
    return float((ours.double() - reference.double()).norm() / reference.double().norm())


def realistic_state_dict(layout: dict, seed: int, tables: dict[str, torch.Tensor] | None = None
                         ) -> dict[str, torch.Tensor]:
    """Random weights at trained-ViT scale for a key -> shape layout; ``tables`` overrides keys.

    Matrices and kernels ~ N(0, 1 / fan_in), LayerNorm gains 1 + N(0, 0.1^2), biases and tokens
    N(0, 0.1^2) (large enough that a dropped or misplaced bias shows).
    """
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in layout.items():
        t = torch.randn(shape, generator=g)
        if re.search(r"norm[^.]*\.weight$", key):
            t = 1.0 + 0.1 * t
        elif len(shape) >= 2 and not key.endswith(("token", "pos_embed", ".emb")):
            t = t / math.sqrt(math.prod(shape[1:]))
        else:
            t = 0.1 * t
        sd[key] = t
    sd.update(tables or {})
    return sd


def _ln(x, sd, p, eps):
    return F.layer_norm(x, x.shape[-1:], sd[f"{p}.weight"], sd[f"{p}.bias"], eps=eps)


def _block(x, sd, p, heads, eps):
    """Pre-norm block; fused qkv with its full bias (AudioMAE) or [q_bias, 0, v_bias] (MARLIN)."""
    if f"{p}.attn.q_bias" in sd:
        zero = torch.zeros_like(sd[f"{p}.attn.q_bias"])
        bias = torch.cat([sd[f"{p}.attn.q_bias"], zero, sd[f"{p}.attn.v_bias"]])
    else:
        bias = sd[f"{p}.attn.qkv.bias"]
    q, k, v = F.linear(_ln(x, sd, f"{p}.norm1", eps), sd[f"{p}.attn.qkv.weight"], bias).chunk(3, dim=-1)
    x = x + f_lin(f_attend(q, k, v, heads), sd, f"{p}.attn.proj")
    fc1, fc2 = ("mlp.fc1", "mlp.fc2") if f"{p}.mlp.fc1.weight" in sd else ("mlp.layers.0.linear", "mlp.layers.1.linear")
    return x + f_lin(F.gelu(f_lin(_ln(x, sd, f"{p}.norm2", eps), sd, f"{p}.{fc1}")), sd, f"{p}.{fc2}")


def _depth(sd, prefix: str) -> int:
    return len({m[1] for k in sd for m in [re.match(re.escape(prefix) + r"(\d+)\.", k)] if m})


def audiomae_encoder(sd, fbank: torch.Tensor, heads: int, with_cls: bool = True) -> torch.Tensor:
    """AudioMAE's ``forward_encoder`` without masking: (B, T, F) normalised fbank -> (B, 1 + L, D).

    ``with_cls=False`` leaves the global CLS token out of the sequence: (B, L, D).
    """
    w = sd["patch_embed.proj.weight"]
    x = F.conv2d(fbank[:, None], w, sd["patch_embed.proj.bias"], stride=w.shape[-2:]).flatten(2).transpose(1, 2)
    pos = sd["pos_embed"][0]
    x = x + pos[1:]
    if with_cls:
        cls = (sd["cls_token"][0] + pos[:1]).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
    for i in range(_depth(sd, "blocks.")):
        x = _block(x, sd, f"blocks.{i}", heads, AUDIOMAE_LN_EPS)
    return _ln(x, sd, "norm", AUDIOMAE_LN_EPS)


def marlin_encoder(sd, video: torch.Tensor, heads: int) -> torch.Tensor:
    """MARLIN's ``extract_features`` without pooling: (B, 3, T, H, W) in [0, 1] -> (B, L, D)."""
    w = sd["encoder.patch_embedding.projection.weight"]
    x = F.conv3d(video, w, sd["encoder.patch_embedding.projection.bias"], stride=w.shape[2:])
    x = x.flatten(2).transpose(1, 2) + sd["encoder.pos_embedding.emb"]
    for i in range(_depth(sd, "encoder.blocks.")):
        x = _block(x, sd, f"encoder.blocks.{i}", heads, MARLIN_LN_EPS)
    return _ln(x, sd, "encoder.norm", MARLIN_LN_EPS)


def marlin_decoder(sd, visible: torch.Tensor, is_visible: torch.Tensor, heads: int) -> torch.Tensor:
    """MARLIN's decoder: (B, K, D) encoder features of the visible tubelets -> (B, L, patch) in token order.

    MARLIN appends the mask tokens after the visible ones and predicts the masked tokens only; the
    attention does not depend on the order, so every prediction is put back in token order here.
    """
    b, n = is_visible.shape
    pos = sd["decoder.pos_embedding.emb"][0]
    x = visible @ sd["enc_dec_proj.weight"].T
    mask_token = sd["decoder.mask_token"].reshape(1, 1, -1)
    ids_vis = is_visible.nonzero()[:, 1].view(b, -1)
    ids_mask = (~is_visible).nonzero()[:, 1].view(b, -1)
    x = torch.cat([x + pos[ids_vis], mask_token + pos[ids_mask]], dim=1)
    for i in range(_depth(sd, "decoder.blocks.")):
        x = _block(x, sd, f"decoder.blocks.{i}", heads, MARLIN_LN_EPS)
    x = f_lin(_ln(x, sd, "decoder.norm", MARLIN_LN_EPS), sd, "decoder.head")
    out = torch.empty_like(x)
    out[torch.arange(b)[:, None], torch.cat([ids_vis, ids_mask], dim=1)] = x
    return out


def marlin_targets(video: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """MARLIN's reconstruction targets (``Marlin.step``): (B, 3, T, H, W) -> (B, L, 3 * t * p * p)."""
    y = video.unfold(2, tubelet, tubelet).unfold(3, patch, patch).unfold(4, patch, patch)
    return rearrange(y, "b c nt nh nw pt ph pw -> b (nt nh nw) (c pt ph pw)")
