"""Detection metrics: window aggregation, ACC / AP / AUC, per-group metrics, coverage, seed statistics.

Conventions (docs/official-differences.md#metrics): fake is the positive class (label 1); a video is
predicted fake when its probability is ``>= threshold`` (0.5); AP is scikit-learn's
``average_precision_score`` and AUC its ``roc_auc_score``. Where the official code wrote AP = AUC = -1
for a set holding a single class, these functions return ``None`` and say why in ``note``. Every
result carries the number of videos it was computed on, so no number is reported without its
denominator.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "AGGREGATIONS",
    "aggregate_windows",
    "binary_metrics",
    "coverage",
    "group_metrics",
    "mean_std",
    "sigmoid",
]

AGGREGATIONS = ("mean", "max", "lse")


def sigmoid(x: float) -> float:
    """Logistic function, stable for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def aggregate_windows(window_logits: Sequence[float] | np.ndarray, how: str = "mean") -> float:
    """One video logit from its window logits.

    Args:
        window_logits: (W,) logits, W >= 1.
        how: "mean" (the official rule, docs/official-differences.md#sliding-window-inference), "max"
            (the most suspicious window), or "lse": logsumexp - log W, a smooth maximum that equals
            the mean for equal logits and tends to the maximum when one window stands out.

    Returns:
        The aggregate logit; the video probability is ``sigmoid`` of it.
    """
    x = np.asarray(window_logits, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("cannot aggregate zero windows")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"window logits must be finite, got {x.tolist()}")
    if how == "mean":
        return float(x.mean())
    if how == "max":
        return float(x.max())
    if how == "lse":
        m = x.max()
        return float(m + math.log(np.exp(x - m).sum()) - math.log(x.size))
    raise ValueError(f"unknown aggregation {how!r}; expected one of {AGGREGATIONS}")


def _check(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in length")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 (real) or 1 (fake), got {sorted(set(y.tolist()) - {0, 1})[:5]}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite (leave failed videos out and report them with coverage)")
    return y.astype(np.int64), s


def binary_metrics(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float = 0.5
) -> dict[str, Any]:
    """ACC, AP and AUC with fake as the positive class.

    Args:
        labels: (N,) 1 = fake, 0 = real.
        scores: (N,) fake probabilities (any monotone score works for AP and AUC; ACC needs
            probabilities for the threshold to mean anything).
        threshold: scores ``>= threshold`` are predicted fake.

    Returns:
        ``acc``, ``ap``, ``auc`` (floats in [0, 1], or None), ``n``, ``n_pos``, ``n_neg`` and ``note``:
        "" or why a metric is None (no videos; only one class present).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, s = _check(labels, scores)
    n, n_pos = int(y.size), int(y.sum())
    out: dict[str, Any] = {"acc": None, "ap": None, "auc": None, "n": n, "n_pos": n_pos, "n_neg": n - n_pos,
                           "note": ""}
    if n == 0:
        out["note"] = "no videos"
        return out
    out["acc"] = float(((s >= threshold).astype(np.int64) == y).mean())
    if n_pos == 0 or n_pos == n:
        only = "fake" if n_pos else "real"
        out["note"] = f"AP and AUC undefined: only {only} videos ({n})"
        return out
    out["ap"] = float(average_precision_score(y, s))
    out["auc"] = float(roc_auc_score(y, s))
    return out


def group_metrics(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    groups: Sequence[str],
    threshold: float = 0.5,
) -> dict[str, dict[str, Any]]:
    """Metrics per group (a manifest column such as ``category``, ``generator`` or ``method``).

    ACC is always the accuracy on the group's own videos. AP and AUC need both classes: a group
    holding both is measured on its own videos; a group of fakes only (a fake category such as
    ``FVFA-WL``) is measured as its fakes against **all** real videos of the evaluation set, the
    usual per-category protocol; a group of reals only gets ACC alone.

    Args:
        labels: (N,) 1 = fake, 0 = real.
        scores: (N,) fake probabilities.
        groups: (N,) group value of each video ("" is reported as "(none)").

    Returns:
        Group -> the :func:`binary_metrics` fields, where ``n``/``n_pos``/``n_neg`` describe the
        group's own videos, plus ``n_ranked`` (videos AP and AUC were computed on) and ``note``
        saying which protocol was used. Groups in sorted order.
    """
    y, s = _check(labels, scores)
    g = np.asarray([str(v) if str(v) else "(none)" for v in groups], dtype=object)
    if g.shape != y.shape:
        raise ValueError(f"groups ({g.size}) and labels ({y.size}) differ in length")
    is_real = y == 0
    n_real = int(is_real.sum())
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(g.tolist())):
        member = g == name
        own = binary_metrics(y[member], s[member], threshold)
        res = {**own, "n_ranked": own["n"] if own["auc"] is not None else 0}
        if own["n_neg"] == 0 and own["n_pos"] > 0:
            if n_real:
                pair = member | is_real
                ranked = binary_metrics(y[pair], s[pair], threshold)
                res.update(ap=ranked["ap"], auc=ranked["auc"], n_ranked=ranked["n"],
                           note=f"AP/AUC: the {own['n_pos']} fake(s) of this group vs all {n_real} real(s) of the set")
            else:
                res["note"] = "AP/AUC undefined: no real videos in the evaluation set to pair with"
        elif own["n_pos"] == 0 and own["n_neg"] > 0:
            res["note"] = "real videos only: ACC alone"
        elif own["auc"] is not None:
            res["note"] = "AP/AUC on the group's own reals and fakes"
        out[name] = res
    return out


def coverage(errors: Sequence[str | None]) -> dict[str, Any]:
    """How many videos were scored and why the others failed.

    Args:
        errors: per video, None / "" when scored, else the failure reason.

    Returns:
        ``n`` (all videos), ``n_scored``, ``n_failed`` and ``failed_by_reason`` (reason -> count,
        most frequent first).
    """
    reasons = Counter(e for e in errors if e)
    n_failed = sum(reasons.values())
    return {"n": len(errors), "n_scored": len(errors) - n_failed, "n_failed": n_failed,
            "failed_by_reason": dict(reasons.most_common())}


def mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1) of one metric over runs (seeds).

    Returns:
        ``mean``, ``std`` (None with fewer than two values), ``n`` (values used) and ``n_missing``
        (runs where the metric was None, left out).
    """
    got = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return {"mean": float(got.mean()) if got.size else None,
            "std": float(got.std(ddof=1)) if got.size > 1 else None,
            "n": int(got.size), "n_missing": len(values) - int(got.size)}
