"""Per-frame heads: (B, T, D) frames -> (B, T) logits.

``linear`` is SSR-DFD's head, a single ``Linear(D -> 1)`` with bias applied to every frame. The
Transformer head is the paper's ablation (reported as giving similar results; no reference
code): a projection, sinusoidal positions, a small post-norm encoder that ignores padded frames
through its key-padding mask, and a ``Linear(d_model -> 1)``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["HEADS", "TransformerHead", "build_head"]

HEADS = ("linear", "transformer")


def _sinusoids(length: int, dim: int) -> Tensor:
    """(length, dim) sin-cos position table (Vaswani et al.)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


class TransformerHead(nn.Module):
    """A small Transformer over the frames of one video, then one logit per frame.

    Args:
        dim: input feature size D.
        d_model: width of the encoder.
        depth: encoder layers.
        num_heads: attention heads.
        ffn_dim: feed-forward width.
        dropout: dropout inside the encoder (off in eval mode).
    """

    def __init__(self, dim: int, d_model: int = 128, depth: int = 1, num_heads: int = 4, ffn_dim: int = 256,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, d_model)
        layer = nn.TransformerEncoderLayer(d_model, num_heads, ffn_dim, dropout, batch_first=True)
        # enable_nested_tensor off: the nested fast path would make padded batches differ from
        # batch size 1 by more than rounding.
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.out = nn.Linear(d_model, 1)

    def forward(self, x: Tensor, is_valid: Tensor) -> Tensor:
        """x: (B, T, D); is_valid: (B, T) bool. Returns (B, T) logits (padded positions are arbitrary)."""
        h = self.proj(x) + _sinusoids(x.shape[1], self.proj.out_features).to(x)
        h = self.encoder(h, src_key_padding_mask=~is_valid)
        return self.out(h).squeeze(-1)


class _Linear(nn.Linear):
    """``Linear(D -> 1)`` per frame; its parameters are ``weight`` (1, D) and ``bias`` (1,), as SSR-DFD's."""

    def forward(self, x: Tensor, is_valid: Tensor | None = None) -> Tensor:  # noqa: ARG002 - frames are independent
        return super().forward(x).squeeze(-1)


def build_head(kind: str, dim: int, **kwargs: int | float) -> nn.Module:
    """The head named `kind` (one of :data:`HEADS`) for D = `dim`; kwargs go to the Transformer head."""
    if kind == "linear":
        if kwargs:
            raise ValueError(f"the linear head takes no options, got {sorted(kwargs)}")
        return _Linear(dim, 1)
    if kind == "transformer":
        return TransformerHead(dim, **kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown head {kind!r}; expected one of {HEADS}")
