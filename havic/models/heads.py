"""Detection heads: token pooling, layer weighting and MLP classifiers.

See docs/official-differences.md#detector.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


class TokenAttentionPool(nn.Module):
    """Scores every token with a small MLP and returns the softmax-weighted sum of the tokens."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens: (B, N, D) -> (B, D)."""
        weights = self.score(tokens).softmax(dim=1)  # (B, N, 1), softmax over tokens
        return (weights * tokens).sum(dim=1)


class MeanPool(nn.Module):
    """Plain average over tokens (the "without adaptive aggregation" ablation)."""

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens: (B, N, D) -> (B, D)."""
        return tokens.mean(dim=1)


class LayerWeights(nn.Module):
    """Softmax-normalised weights over the hierarchical levels: a convex combination.

    Args:
        num_levels: number of pooled levels.
        learnable: False keeps the uniform average.
    """

    def __init__(self, num_levels: int, learnable: bool = True) -> None:
        super().__init__()
        logits = torch.full((num_levels,), 1.0 / num_levels)  # softmax of a constant: uniform
        if learnable:
            self.logits = nn.Parameter(logits)
        else:
            self.register_buffer("logits", logits, persistent=False)

    def weights(self) -> Tensor:
        return self.logits.softmax(dim=0)

    def forward(self, levels: Tensor) -> Tensor:
        """levels: (B, n_levels, D) -> (B, D)."""
        return torch.einsum("l,bld->bd", self.weights().to(levels.dtype), levels)


class MLPHead(nn.Module):
    """Linear layers with dropout before each ReLU, ending in one logit.

    Args:
        in_dim: input width.
        hidden: widths of the hidden layers.
        dropout: dropout rate after each hidden Linear (one per hidden layer).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], dropout: Sequence[float]) -> None:
        super().__init__()
        if len(hidden) != len(dropout):
            raise ValueError(f"{len(hidden)} hidden layers need as many dropout rates, got {list(dropout)}")
        layers: list[nn.Module] = []
        width = in_dim
        for h, p in zip(hidden, dropout):
            layers += [nn.Linear(width, h), nn.Dropout(p), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)
        for m in self.layers:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_dim) -> (B,) logits."""
        return self.layers(x).squeeze(-1)
