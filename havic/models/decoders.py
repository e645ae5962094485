"""Hierarchical modality-specific decoders (docs/official-differences.md#hierarchical-decoders).

Decoder layer l (1-based, of n = len(taps)) first runs a chain of cross-attentions to the encoder
taps from ``taps[n - l]`` down to the shallowest tap, then one Transformer block, then the shared
LayerNorm and its own prediction head. With taps (3, 6, 9, 12): layer 1 reads 12 -> 9 -> 6 -> 3,
layer 4 reads 3 only. One cross-attention module per tap is shared by every layer that reads it.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from havic.models.layers import Block, HierarchicalCrossAttention, init_weights
from havic.models.masking import scatter_tokens


class HierarchicalDecoder(nn.Module):
    """Reconstructs every token of one modality from the fused visible tokens.

    Args:
        num_tokens: L, tokens of the full grid.
        patch_dim: values predicted per token.
        position_table: (L, dim) fixed positions of the decoder.
        encoder_dim: width of the fused tokens and encoder taps.
        dim: decoder width.
        num_heads: decoder heads.
        taps: encoder blocks whose features the decoder reads; one decoder layer per tap.
        mlp_ratio: MLP width ratio of the decoder blocks.
        drop_path: stochastic depth of the decoder blocks.
        modality_token: add a learnable modality embedding (the audio decoder does).
        mask_token_std: init std of the mask token (0 = zeros, as the audio decoder).
    """

    def __init__(
        self, num_tokens: int, patch_dim: int, position_table: Tensor, encoder_dim: int, dim: int,
        num_heads: int, taps: Sequence[int], mlp_ratio: float = 4.0, drop_path: float = 0.0,
        modality_token: bool = False, mask_token_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.taps = tuple(sorted(int(t) for t in taps))
        self.num_tokens = num_tokens
        self.embed = nn.Linear(encoder_dim, dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        if mask_token_std > 0:
            nn.init.trunc_normal_(self.mask_token, std=mask_token_std, a=-mask_token_std, b=mask_token_std)
        self.modality = nn.Parameter(torch.zeros(dim)) if modality_token else None
        if self.modality is not None:
            nn.init.normal_(self.modality, std=0.02)
        self.register_buffer("pos_embed", position_table, persistent=False)
        self.cross = nn.ModuleDict(
            {str(t): HierarchicalCrossAttention(dim, encoder_dim, num_heads) for t in self.taps}
        )
        n = len(self.taps)
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, "qv", drop_path) for _ in range(n))
        self.norm = nn.LayerNorm(dim)
        self.heads = nn.ModuleList(nn.Linear(dim, patch_dim) for _ in range(n))
        init_weights(self)

    def chain(self, layer: int) -> tuple[int, ...]:
        """Taps read by decoder layer ``layer`` (0-based), deepest first."""
        return tuple(reversed(self.taps[: len(self.taps) - layer]))

    def forward(self, fused: Tensor, ids_keep: Tensor, encoder_taps: dict[int, Tensor]) -> list[Tensor]:
        """Decode.

        Args:
            fused: (B, K, encoder_dim) visible tokens after the audio-visual fusion.
            ids_keep: (B, K) their positions on the full grid.
            encoder_taps: tap -> (B, K, encoder_dim) visible patch tokens of the masked encoder.

        Returns:
            One (B, L, patch_dim) prediction per decoder layer, shallowest layer first.
        """
        x = scatter_tokens(self.embed(fused), ids_keep, self.num_tokens, self.mask_token)
        x = x + self.pos_embed
        if self.modality is not None:
            x = x + self.modality
        preds = []
        for layer, (block, head) in enumerate(zip(self.blocks, self.heads)):
            for tap in self.chain(layer):
                x = self.cross[str(tap)](x, encoder_taps[tap])
            x = block(x)
            preds.append(head(self.norm(x)))
        return preds
