"""Fixed sinusoidal position tables (docs/official-differences.md#sin-cos-tables).

Every table uses the *interleaved* layout of the official code and MARLIN: for position p and
i = 0 .. d/2-1, ``e[2i] = sin(p * 10000^(-i/(d/2)))`` and ``e[2i+1] = cos(...)``. (MAE puts all sines
before all cosines; the released weights were trained with the interleaved form.)
"""
from __future__ import annotations

import torch
from torch import Tensor


def sincos_1d(positions: Tensor, dim: int) -> Tensor:
    """Interleaved sin-cos embedding.

    Args:
        positions: (N,) integer or float positions.
        dim: even embedding width.

    Returns:
        (N, dim) float32 table.
    """
    if dim % 2:
        raise ValueError(f"sin-cos width must be even, got {dim}")
    pos = positions.to(torch.float64).reshape(-1, 1)
    freqs = torch.pow(10000.0, -torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = pos * freqs  # (N, dim/2)
    table = torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(len(pos), dim)
    return table.to(torch.float32)


def sincos_2d(first: Tensor, second: Tensor, dim: int) -> Tensor:
    """Two-axis table: the first half of the width encodes ``first``, the second half ``second``.

    The official audio table passes the time-patch index as ``first`` and the mel-band index as
    ``second`` (docs/official-differences.md#sin-cos-tables), whatever the token order.

    Args:
        first: (N,) position of every token along the first axis.
        second: (N,) position of every token along the second axis.
        dim: width, divisible by 4.

    Returns:
        (N, dim) float32 table.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos width must be divisible by 4, got {dim}")
    return torch.cat([sincos_1d(first, dim // 2), sincos_1d(second, dim // 2)], dim=1)
