"""Vectorised masking: which tokens an encoder sees during pretraining (docs/official-differences.md#masking).

Keep indices (``ids_keep``) are laid out segment by segment, so that the visible tokens of one
segment stay contiguous (per-segment CLS insertion and segment pooling rely on it). Within a
segment they are sorted. Masks take their device from the caller and accept a seeded generator.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class MaskIds:
    """Visible-token indices of one batch.

    Attributes:
        video: (B, K_v) indices into the video tokens, time-step-major.
        audio: (B, K_a) indices into the audio tokens, segment-major.
    """

    video: Tensor
    audio: Tensor


def num_kept(n: int, mask_ratio: float) -> int:
    """Tokens kept out of ``n``: ``int(n * (1 - ratio))`` as the official code (19 of 196 at 0.9)."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {mask_ratio}")
    keep = int(n * (1.0 - mask_ratio))
    if keep < 1:
        raise ValueError(f"mask ratio {mask_ratio} keeps no token out of {n}")
    return keep


def _random_subsets(shape: tuple[int, ...], n: int, k: int, device, generator) -> Tensor:
    """(*shape, k) sorted random subsets of range(n), independent along ``shape``."""
    noise = torch.rand(*shape, n, device=device, generator=generator)
    return noise.argsort(dim=-1)[..., :k].sort(dim=-1).values


def tube_keep(
    batch: int, time_steps: int, tokens_per_step: int, mask_ratio: float,
    device: torch.device | str | None = None, generator: torch.Generator | None = None,
) -> Tensor:
    """Tube masking: the same spatial positions are visible at every time step.

    Returns:
        (B, time_steps * k) token indices, k = ``num_kept(tokens_per_step, mask_ratio)``, grouped by
        time step: ``[ids + 0 * P, ids + 1 * P, ...]``.
    """
    k = num_kept(tokens_per_step, mask_ratio)
    ids = _random_subsets((batch,), tokens_per_step, k, device, generator)  # (B, k)
    offsets = torch.arange(time_steps, device=ids.device) * tokens_per_step
    return (ids[:, None, :] + offsets[None, :, None]).flatten(1)


def segment_keep(
    batch: int, num_tokens: int, num_segments: int, mask_ratio: float,
    device: torch.device | str | None = None, generator: torch.Generator | None = None,
) -> Tensor:
    """Stratified random masking: the same number of visible tokens in every segment.

    Returns:
        (B, num_segments * k) token indices, k = ``num_kept(num_tokens / num_segments, ratio)``,
        grouped by segment.
    """
    per = num_tokens // num_segments
    k = num_kept(per, mask_ratio)
    ids = _random_subsets((batch, num_segments), per, k, device, generator)  # (B, S, k)
    offsets = torch.arange(num_segments, device=ids.device) * per
    return (ids + offsets[None, :, None]).flatten(1)


def gather_tokens(x: Tensor, ids: Tensor) -> Tensor:
    """(B, L, D), (B, K) -> (B, K, D)."""
    return x.gather(1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def scatter_tokens(visible: Tensor, ids: Tensor, num_tokens: int, fill: Tensor) -> Tensor:
    """Place visible tokens back on the full grid; every other position gets ``fill``.

    Args:
        visible: (B, K, D) tokens.
        ids: (B, K) their positions.
        num_tokens: L, the full sequence length.
        fill: (D,) or broadcastable to (B, L, D), e.g. a learnable mask token (it receives the
            gradient of every position it fills).

    Returns:
        (B, L, D).
    """
    b, _, d = visible.shape
    base = fill.to(visible.dtype).expand(b, num_tokens, d)
    return base.scatter(1, ids.unsqueeze(-1).expand(-1, -1, d), visible)


def hidden_mask(ids: Tensor, num_tokens: int) -> Tensor:
    """(B, K) keep indices -> (B, L) bool, True where the token was hidden (masked)."""
    mask = torch.ones(ids.shape[0], num_tokens, dtype=torch.bool, device=ids.device)
    return mask.scatter(1, ids, False)
