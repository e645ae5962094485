"""Padding of variable-length sequences and masked temporal pooling of per-frame logits.

SSR-DFD pools per-frame logits with a plain log-sum-exp (no temperature, no length normalisation),
so a video whose frames all score c gets c + log T. ``lme`` (log-mean-exp = LSE - log T) is the
length-neutral variant; ``mean`` and ``max`` are the usual alternatives.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["POOLINGS", "pad_sequences", "pool"]

POOLINGS = ("lse", "mean", "max", "lme")


def pad_sequences(seqs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Stacks (T_i, D) sequences into a zero-padded batch.

    Args:
        seqs: B tensors of shape (T_i, D), T_i >= 1, the same D.

    Returns:
        ``(x, is_valid)``: x (B, T_max, D), is_valid (B, T_max) bool, True on real frames.
    """
    if not seqs:
        raise ValueError("pad_sequences needs at least one sequence")
    dims = {int(s.shape[-1]) for s in seqs}
    if len(dims) != 1 or any(s.ndim != 2 for s in seqs):
        raise ValueError(f"sequences must all be (T, D) with one D, got shapes {[tuple(s.shape) for s in seqs][:5]}")
    lengths = torch.tensor([int(s.shape[0]) for s in seqs])
    if int(lengths.min()) < 1:
        raise ValueError("every sequence needs at least one frame")
    x = torch.nn.utils.rnn.pad_sequence(list(seqs), batch_first=True)
    is_valid = torch.arange(x.shape[1])[None, :] < lengths[:, None]
    return x, is_valid


def pool(logits: Tensor, is_valid: Tensor | None = None, how: str = "lse") -> Tensor:
    """Pools per-frame logits over time, ignoring padded frames.

    Args:
        logits: (B, T) per-frame logits.
        is_valid: (B, T) bool, True on real frames (None: every frame is real).
        how: ``lse`` log sum_t exp(l_t) (SSR-DFD); ``lme`` LSE - log T; ``mean``; ``max``.

    Returns:
        (B,) video scores.
    """
    if how not in POOLINGS:
        raise ValueError(f"unknown pooling {how!r}; expected one of {POOLINGS}")
    if is_valid is None:
        is_valid = torch.ones_like(logits, dtype=torch.bool)
    if is_valid.shape != logits.shape:
        raise ValueError(f"is_valid {tuple(is_valid.shape)} does not match logits {tuple(logits.shape)}")
    count = is_valid.sum(dim=1).to(logits.dtype)
    if how == "mean":
        return (logits * is_valid).sum(dim=1) / count
    # -inf on padding: exp(-inf) = 0 adds nothing to the sum and never wins the max; masked_fill
    # (not a multiply) so the padded positions get a zero gradient.
    filled = logits.masked_fill(~is_valid, -math.inf)
    if how == "max":
        return filled.max(dim=1).values
    lse = torch.logsumexp(filled, dim=1)
    return lse if how == "lse" else lse - torch.log(count)
