"""Time-axis rules that turn an encoder's outputs into per-frame or per-segment sequences.

Pure tensor functions, shared by the extractors and checked by hand-made tensors in the tests:

* :func:`stack_pairs`: 50 Hz speech features to 25 Hz by concatenating consecutive pairs (not by
  interpolating); an odd count repeats the last frame first, so N frames give ceil(N / 2) rows.
* :func:`chunk_spans`: non-overlapping fixed-length frame chunks; a trailing partial chunk is
  dropped (VideoMAE: 16 frames per chunk).
* :func:`segment_means`: the mean of each segment's tokens, given every token's segment.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["chunk_spans", "segment_means", "stack_pairs"]


def stack_pairs(x: Tensor) -> Tensor:
    """(N, D) -> (ceil(N / 2), 2 D): row k is ``[x[2k], x[2k + 1]]``; an odd N repeats ``x[N - 1]``."""
    if x.ndim != 2:
        raise ValueError(f"expected (N, D) features, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        return x.new_zeros(0, 2 * x.shape[1])
    if x.shape[0] % 2:
        x = torch.cat([x, x[-1:]], dim=0)
    return x.reshape(x.shape[0] // 2, 2 * x.shape[1])


def chunk_spans(n_frames: int, chunk: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` of the non-overlapping `chunk`-frame chunks of `n_frames` frames.

    A trailing partial chunk is dropped: frames ``chunk * floor(n_frames / chunk)`` onwards get no chunk.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return [(k * chunk, (k + 1) * chunk) for k in range(max(0, n_frames) // chunk)]


def segment_means(tokens: Tensor, segment_ids: Tensor, num_segments: int) -> Tensor:
    """Mean token of every segment.

    Args:
        tokens: (B, L, D) tokens in the grid's order (no CLS tokens).
        segment_ids: (L,) segment of every token, in ``0 .. num_segments - 1``.
        num_segments: S.

    Returns:
        (B, S, D); a segment without tokens is NaN.
    """
    if tokens.ndim != 3 or segment_ids.shape != tokens.shape[1:2]:
        raise ValueError(f"tokens (B, L, D) and segment_ids (L,) do not match: {tuple(tokens.shape)}, "
                         f"{tuple(segment_ids.shape)}")
    one_hot = torch.nn.functional.one_hot(segment_ids.to(tokens.device).long(), num_segments).to(tokens.dtype)
    sums = torch.einsum("bld,ls->bsd", tokens, one_hot)
    counts = one_hot.sum(0)
    return sums / counts[None, :, None]
