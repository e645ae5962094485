"""Audio-visual interaction and cross-modal semantic translators.

See docs/official-differences.md#audio-visual-fusion and docs/official-differences.md#semantic-translators.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from havic.models.layers import Block, CrossModalAttention, init_weights
from havic.models.masking import scatter_tokens


class AudioVisualFusion(nn.Module):
    """Bidirectional cross-attention between the two streams, optionally followed by self-attention.

    Both directions read the pre-interaction streams. ``double_residual=True`` reproduces the
    released weights, where the cross-attention unit's own residual is added to the input once
    more: ``X' = X + (X + o + MLP(...))``. ``self_attention=True`` adds the Transformer block per
    stream that the paper describes (the official code computes it and discards the result).

    Args:
        dim: width of both streams.
        num_heads: attention heads.
        mlp_ratio: MLP width ratio.
        double_residual: see above.
        self_attention: see above.
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, double_residual: bool = False,
        self_attention: bool = True,
    ) -> None:
        super().__init__()
        self.double_residual = double_residual
        self.video_cross = CrossModalAttention(dim, num_heads, mlp_ratio)
        self.audio_cross = CrossModalAttention(dim, num_heads, mlp_ratio)
        self.video_self = Block(dim, num_heads, mlp_ratio, "qkv") if self_attention else None
        self.audio_self = Block(dim, num_heads, mlp_ratio, "qkv") if self_attention else None
        self.video_norm = nn.LayerNorm(dim)
        self.audio_norm = nn.LayerNorm(dim)
        init_weights(self)

    def forward(self, video: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        """video: (B, Nv, D), audio: (B, Na, D) -> the fused (video, audio), same shapes."""
        v = self.video_cross(video, audio)
        a = self.audio_cross(audio, video)
        if self.double_residual:
            v, a = video + v, audio + a
        if self.video_self is not None:
            v, a = self.video_self(v), self.audio_self(a)
        return self.video_norm(v), self.audio_norm(a)


class SemanticTranslator(nn.Module):
    """Predicts the other modality's full token features from one modality's visible tokens.

    The visible tokens are placed on their full grid (mask token elsewhere) with positions, then a
    linear token aligner maps, within each segment, the source tokens to the target tokens
    (per-segment scope, as the released weights), then one Transformer block and a LayerNorm.

    Args:
        source_tokens: L_s, tokens of the source grid.
        target_tokens: L_t, tokens of the target grid.
        num_segments: S; both grids are split into S contiguous segments.
        position_table: (L_s, dim) fixed positions of the source grid.
        dim: token width.
        num_heads: heads of the block.
        mlp_ratio: MLP width ratio.
        modality_token: add a learnable modality embedding (audio -> video does).
        mask_token_std: init std of the mask token (0 = zeros).
    """

    def __init__(
        self, source_tokens: int, target_tokens: int, num_segments: int, position_table: Tensor, dim: int,
        num_heads: int, mlp_ratio: float = 4.0, modality_token: bool = False, mask_token_std: float = 0.02,
    ) -> None:
        super().__init__()
        if source_tokens % num_segments or target_tokens % num_segments:
            raise ValueError(f"{source_tokens} and {target_tokens} tokens must split into {num_segments} segments")
        self.source_tokens = source_tokens
        self.num_segments = num_segments
        self.mask_token = nn.Parameter(torch.zeros(dim))
        if mask_token_std > 0:
            nn.init.trunc_normal_(self.mask_token, std=mask_token_std, a=-mask_token_std, b=mask_token_std)
        self.modality = nn.Parameter(torch.zeros(dim)) if modality_token else None
        self.register_buffer("pos_embed", position_table, persistent=False)
        self.aligner = nn.Linear(source_tokens // num_segments, target_tokens // num_segments)
        self.block = Block(dim, num_heads, mlp_ratio, "qkv")
        self.norm = nn.LayerNorm(dim)
        init_weights(self)
        if self.modality is not None:
            nn.init.normal_(self.modality, std=0.02)

    def forward(self, visible: Tensor, ids_keep: Tensor) -> Tensor:
        """visible: (B, K, D) fused source tokens at ``ids_keep`` (B, K) -> (B, L_t, D)."""
        x = scatter_tokens(visible, ids_keep, self.source_tokens, self.mask_token) + self.pos_embed
        if self.modality is not None:
            x = x + self.modality
        b, _, d = x.shape
        x = x.view(b, self.num_segments, -1, d).transpose(2, 3)  # (B, S, D, L_s / S)
        x = self.aligner(x).transpose(2, 3).reshape(b, -1, d)  # (B, L_t, D)
        return self.norm(self.block(x))
