"""Video and audio ViT encoders with per-segment CLS tokens and hierarchical taps.

See docs/official-differences.md#encoders.

Both encoders: patch embedding + positions -> optional masking (keep indices) -> one CLS token
prepended to each of the S segments -> pre-norm blocks. The outputs of the tapped blocks (default
3, 6, 9, 12) are each passed through the encoder's final LayerNorm, as in the released weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from havic.models.layers import Block, init_weights
from havic.models.masking import gather_tokens
from havic.models.patching import AudioGrid, VideoGrid
from havic.models.pos_embed import sincos_1d


@dataclass
class EncoderOutput:
    """Normalised features of the tapped blocks.

    Attributes:
        taps: block index -> (B, S, 1 + P, D) features grouped by segment; index 0 of each group is
            that segment's CLS token, P the (visible) patch tokens per segment.
    """

    taps: dict[int, Tensor]

    @property
    def last(self) -> int:
        return max(self.taps)

    def patches(self, tap: int | None = None) -> Tensor:
        """(B, S * P, D) patch tokens of a tap (default: the last), CLS tokens removed."""
        return self.taps[self.last if tap is None else tap][:, :, 1:].flatten(1, 2)

    def sequence(self, tap: int | None = None) -> Tensor:
        """(B, S * (1 + P), D) the full token sequence of a tap, CLS tokens included."""
        return self.taps[self.last if tap is None else tap].flatten(1, 2)


def insert_cls(tokens: Tensor, cls: Tensor) -> Tensor:
    """[cls_0, group_0, cls_1, group_1, ...].

    Args:
        tokens: (B, S * P, D) patch tokens, grouped by segment.
        cls: (S, D) or (B, S, D) one token per segment.

    Returns:
        (B, S * (1 + P), D).
    """
    b, n, d = tokens.shape
    s = cls.shape[-2]
    if n % s:
        raise ValueError(f"{n} tokens cannot be split into {s} segments")
    groups = tokens.view(b, s, n // s, d)
    cls = cls.expand(b, s, d).unsqueeze(2).to(tokens.dtype)
    return torch.cat([cls, groups], dim=2).flatten(1, 2)


def strip_cls(sequence: Tensor, num_segments: int) -> Tensor:
    """Inverse of :func:`insert_cls` for the patch tokens: (B, S * (1 + P), D) -> (B, S * P, D)."""
    b, n, d = sequence.shape
    return sequence.view(b, num_segments, n // num_segments, d)[:, :, 1:].flatten(1, 2)


class _SegmentViT(nn.Module):
    """Shared trunk: segment CLS tokens, blocks, taps and the final norm.

    Subclasses define ``embed(x) -> (B, L, D)``, the patch tokens with their positions.
    ``norm_eps`` is the epsilon of every LayerNorm of the blocks and of the final norm.
    """

    def __init__(
        self, dim: int, depth: int, num_heads: int, mlp_ratio: float, drop_path: float,
        num_segments: int, taps: Sequence[int], cls_pos: bool, norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        taps = tuple(sorted(set(int(t) for t in taps)))
        if not taps or taps[0] < 1 or taps[-1] != depth:
            raise ValueError(f"taps {taps} must be block indices in 1..{depth} and include the last block")
        self.taps = taps
        self.num_segments = num_segments
        self.cls_tokens = nn.Parameter(torch.zeros(num_segments, dim))
        nn.init.normal_(self.cls_tokens, std=0.02)
        self.register_buffer(
            "cls_pos", sincos_1d(torch.arange(num_segments), dim) if cls_pos else torch.zeros(num_segments, dim),
            persistent=False,
        )
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio, "qv", drop_path, norm_eps) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=norm_eps)

    def forward(
        self, x: Tensor, ids_keep: Tensor | None = None, taps: Sequence[int] | None = None, stochastic: bool = True,
    ) -> EncoderOutput:
        """Encode one batch.

        Args:
            x: the modality's input (see subclasses).
            ids_keep: (B, K) visible token indices grouped by segment, or None for all tokens.
            taps: blocks whose normalised output to return (default: the configured taps).
            stochastic: False disables drop-path even in train mode (deterministic targets).

        Returns:
            :class:`EncoderOutput` with (B, S, 1 + K / S, D) per tap.
        """
        taps = self.taps if taps is None else tuple(sorted(taps))
        tokens = self.embed(x)
        if ids_keep is not None:
            tokens = gather_tokens(tokens, ids_keep)
        h = insert_cls(tokens, self.cls_tokens + self.cls_pos)
        b, n, d = h.shape
        s = self.num_segments
        return EncoderOutput({i: f.view(b, s, n // s, d) for i, f in self._run_blocks(h, taps, stochastic).items()})

    def plain_forward(self, x: Tensor, taps: Sequence[int] | None = None) -> dict[int, Tensor]:
        """The encoder as a plain ViT: no segment CLS tokens, no drop-path.

        This is what the upstream encoder it is initialised from computes (MARLIN's
        ``extract_features``; AudioMAE without its global CLS token), so it measures how faithfully
        a conversion carries the upstream model over.

        Args:
            x: the modality's input (see subclasses).
            taps: blocks whose normalised output to return (default: the configured taps).

        Returns:
            tap -> (B, L, D) normalised features of every patch token, in this grid's token order.
        """
        taps = self.taps if taps is None else tuple(sorted(taps))
        return self._run_blocks(self.embed(x), taps, stochastic=False)

    def _run_blocks(self, h: Tensor, taps: Sequence[int], stochastic: bool) -> dict[int, Tensor]:
        """Blocks up to the deepest tap: tap -> normalised (B, N, D) sequence."""
        out: dict[int, Tensor] = {}
        for i, block in enumerate(self.blocks[: max(taps)], start=1):
            h = block(h, stochastic=stochastic)
            if i in taps:
                out[i] = self.norm(h)
        return out


class VideoEncoder(_SegmentViT):
    """ViT over 2x16x16 tubelets of (B, 3, T, H, W) RGB clips in [0, 1].

    Fixed 1-D sin-cos positions; the CLS tokens always carry their positions.
    """

    def __init__(
        self, grid: VideoGrid, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
        drop_path: float = 0.0, taps: Sequence[int] = (3, 6, 9, 12),
    ) -> None:
        super().__init__(dim, depth, num_heads, mlp_ratio, drop_path, grid.num_segments, taps, cls_pos=True)
        self.grid = grid
        t, p = grid.tubelet_size, grid.patch_size
        self.patch_embed = nn.Conv3d(grid.channels, dim, kernel_size=(t, p, p), stride=(t, p, p))
        self.register_buffer("pos_embed", grid.position_table(dim), persistent=False)
        init_weights(self.blocks)

    def embed(self, video: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> (B, L, D) tokens with positions."""
        self.grid.check(video)
        return self.patch_embed(video).flatten(2).transpose(1, 2) + self.pos_embed


class AudioEncoder(_SegmentViT):
    """ViT over 16x16 patches of the (B, T, F) fbank, in the grid's token order.

    Learnable positions initialised with the 2-D sin-cos table plus a learnable modality token.
    ``cls_pos=False`` reproduces the official code, where the CLS positions are never added.
    ``norm_eps`` is the LayerNorm epsilon of the blocks and the final norm: 1e-5 in the official
    code, 1e-6 in AudioMAE, whose weights these layers may start from.
    """

    def __init__(
        self, grid: AudioGrid, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
        drop_path: float = 0.0, taps: Sequence[int] = (3, 6, 9, 12), cls_pos: bool = True, norm_eps: float = 1e-5,
    ) -> None:
        super().__init__(dim, depth, num_heads, mlp_ratio, drop_path, grid.num_segments, taps, cls_pos, norm_eps)
        self.grid = grid
        self.patch_embed = nn.Conv2d(1, dim, kernel_size=grid.patch_size, stride=grid.patch_size)
        self.pos_embed = nn.Parameter(grid.position_table(dim))
        self.modality = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.modality, std=0.02)
        nn.init.xavier_uniform_(self.patch_embed.weight.view(dim, -1))
        init_weights(self.blocks, "xavier_normal")

    def embed(self, audio: Tensor) -> Tensor:
        """(B, T, F) -> (B, L, D) tokens with positions and the modality token."""
        tokens = self.patch_embed(self.grid.to_image(audio)).flatten(2).transpose(1, 2)
        return tokens + self.pos_embed + self.modality
