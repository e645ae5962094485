"""The SSR-DFD probe: per-frame L2 normalisation, a per-frame head, temporal pooling; its loss and probabilities.

Exactly as the paper (Boldisor et al., CVPR 2026, linear probing): l_t = w . x_hat_t + b with
x_hat_t = x_t / ||x_t||, video score s = log sum_t exp(l_t) over the valid frames, loss =
two-class cross-entropy on (-s, s), which equals binary cross-entropy on the logit 2s, and
P(fake) = sigmoid(2s), p_t = sigmoid(2 l_t). The head and the pooling can be swapped
(:mod:`havic.analysis.heads`, :mod:`havic.analysis.pooling`); the defaults are the paper's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from havic.analysis.heads import build_head
from havic.analysis.pooling import pool

__all__ = ["FrameProbe", "ProbeOutput", "fake_probability", "frame_probability", "probe_loss"]


@dataclass
class ProbeOutput:
    """What a probe gives for a batch.

    Attributes:
        frame_logits: (B, T) l_t (padded positions are meaningless).
        score: (B,) pooled video score s (logit scale; the paper's AUC is on s).
    """

    frame_logits: Tensor
    score: Tensor


class FrameProbe(nn.Module):
    """Per-frame head and temporal pooling over frozen features.

    Args:
        dim: feature size D.
        head: ``linear`` (the paper) or ``transformer``.
        pooling: ``lse`` (the paper), ``lme``, ``mean`` or ``max``.
        l2_normalize: L2-normalise every frame first (the paper always does).
        head_options: options of the Transformer head.
    """

    def __init__(self, dim: int, head: str = "linear", pooling: str = "lse", l2_normalize: bool = True,
                 **head_options: int | float) -> None:
        super().__init__()
        self.dim, self.head_kind, self.pooling, self.l2_normalize = dim, head, pooling, l2_normalize
        self.head_options = dict(head_options)
        self.head = build_head(head, dim, **head_options)
        pool(torch.zeros(1, 1), how=pooling)  # rejects an unknown pooling now, not at the first batch

    def forward(self, x: Tensor, is_valid: Tensor | None = None) -> ProbeOutput:
        """x: (B, T, D) frames (zero-padded); is_valid: (B, T) bool or None (no padding)."""
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"expected frames (B, T, {self.dim}), got {tuple(x.shape)}")
        if is_valid is None:
            is_valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if self.l2_normalize:
            x = F.normalize(x, dim=-1)  # zero padding stays zero
        logits = self.head(x, is_valid)
        return ProbeOutput(logits, pool(logits, is_valid, self.pooling))


def probe_loss(score: Tensor, label: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy on the two logits (-s, s) = BCE with logit 2s.

    Args:
        score: (B,) video scores s.
        label: (B,) 1 = fake, 0 = real.
        reduction: ``mean`` (over videos), ``sum`` or ``none``.
    """
    return F.binary_cross_entropy_with_logits(2.0 * score, label.to(score.dtype), reduction=reduction)


def fake_probability(score: Tensor) -> Tensor:
    """P(fake | video) = sigmoid(2 s)."""
    return torch.sigmoid(2.0 * score)


def frame_probability(frame_logits: Tensor) -> Tensor:
    """Per-frame p_t = sigmoid(2 l_t); the decision boundary is l_t = 0."""
    return torch.sigmoid(2.0 * frame_logits)
