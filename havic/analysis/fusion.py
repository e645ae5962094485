"""Combining two features or two probes: early fusion, late fusion, score correlations, relative gains.

* Early fusion: one probe on the per-frame concatenation [a_t ; b_t] of two feature sequences,
  cut to their common length (SSR-DFD's "both" input mode). With ``normalize_parts`` each part is
  L2-normalised first, so neither dominates the concatenation by its scale.
* Late fusion (the combinations of SSR-DFD's tables): one probe per feature; the fused score of a
  video is the mean of the two raw pooled scores s (logit scale, not probabilities), joined on
  the video id.
* Complementarity (the paper's Fig. 5): Pearson, Spearman and Kendall correlations of two models'
  scores on the same videos, and the relative gain (AUC_fused - AUC_row) / AUC_row.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from havic.metrics import binary_metrics

__all__ = ["early_fusion", "fusion_study", "late_fusion", "relative_gain", "score_correlations"]


def early_fusion(a: Tensor, b: Tensor, normalize_parts: bool = False) -> Tensor:
    """(T_a, D_a) and (T_b, D_b) -> (min(T_a, T_b), D_a + D_b): per-frame concatenation, truncated.

    Both sequences must share a frame rate (e.g. 25 Hz video and 25 Hz stacked audio features).
    """
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"expected two (T, D) sequences, got {tuple(a.shape)} and {tuple(b.shape)}")
    n = min(a.shape[0], b.shape[0])
    a, b = a[:n], b[:n]
    if normalize_parts:
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    return torch.cat([a.float(), b.float()], dim=-1)


def late_fusion(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    """Mean of two raw scores per video, on the videos both models scored (in `a`'s order)."""
    return {k: 0.5 * (float(a[k]) + float(b[k])) for k in a if k in b}


def score_correlations(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, Any]:
    """Pearson, Spearman and Kendall correlations of two models' scores on their common videos.

    Returns:
        ``{"pearson", "spearman", "kendall", "n"}``; a coefficient is None with fewer than two
        common videos or a constant score.
    """
    from scipy import stats

    common = [k for k in a if k in b]
    x = np.array([a[k] for k in common], dtype=np.float64)
    y = np.array([b[k] for k in common], dtype=np.float64)
    out: dict[str, Any] = {"pearson": None, "spearman": None, "kendall": None, "n": len(common)}
    if len(common) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    out["pearson"] = float(stats.pearsonr(x, y)[0])
    out["spearman"] = float(stats.spearmanr(x, y)[0])
    out["kendall"] = float(stats.kendalltau(x, y)[0])
    return out


def relative_gain(auc_fused: float, auc_row: float) -> float:
    """(AUC_fused - AUC_row) / AUC_row, the paper's relative improvement of fusing with another model."""
    if auc_row <= 0:
        raise ValueError(f"AUC of the row model must be positive, got {auc_row}")
    return (auc_fused - auc_row) / auc_row


def fusion_study(scores: Mapping[str, Mapping[str, float]], labels: Mapping[str, int],
                 models: Sequence[str] | None = None) -> dict[str, Any]:
    """Every pair of models on one test set: correlations, late-fusion AUC and relative gains.

    Args:
        scores: model name -> {video id: raw score s}.
        labels: video id -> 1 fake / 0 real.
        models: the order of rows and columns (default: the order of `scores`).

    Returns:
        ``models``, ``auc`` {model: AUC}, and n x n matrices (lists of rows; the diagonal holds the
        single model): ``pearson``, ``spearman``, ``kendall``, ``fused_auc``, ``gain`` (row i,
        column j: the gain of fusing j into i).
    """
    models = list(models or scores)

    def auc(s: Mapping[str, float]) -> float | None:
        ids = [k for k in s if k in labels]
        return binary_metrics([labels[k] for k in ids], [s[k] for k in ids])["auc"]

    single = {m: auc(scores[m]) for m in models}
    out: dict[str, Any] = {"models": models, "auc": single}
    for key in ("pearson", "spearman", "kendall", "fused_auc", "gain"):
        out[key] = [[None] * len(models) for _ in models]
    for i, mi in enumerate(models):
        for j, mj in enumerate(models):
            corr = score_correlations(scores[mi], scores[mj])
            for key in ("pearson", "spearman", "kendall"):
                out[key][i][j] = corr[key]
            fused = single[mi] if i == j else auc(late_fusion(scores[mi], scores[mj]))
            out["fused_auc"][i][j] = fused
            if fused is not None and single[mi]:
                out["gain"][i][j] = relative_gain(fused, single[mi])
    return out
