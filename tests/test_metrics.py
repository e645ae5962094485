"""Metrics: window aggregation, ACC/AP/AUC against hand values and scikit-learn, groups, coverage, seeds."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from havic.metrics import aggregate_windows, binary_metrics, coverage, group_metrics, mean_std, sigmoid


def test_aggregate_windows_by_hand():
    x = [0.0, 1.0, 2.0]
    assert aggregate_windows(x, "mean") == pytest.approx(1.0)
    assert aggregate_windows(x, "max") == pytest.approx(2.0)
    lse = math.log(math.exp(0) + math.exp(1) + math.exp(2)) - math.log(3)
    assert aggregate_windows(x, "lse") == pytest.approx(lse)
    # lse sits between the mean and the max; equals both for equal logits; no overflow for large ones.
    assert 1.0 < aggregate_windows(x, "lse") < 2.0
    assert aggregate_windows([0.7] * 5, "lse") == pytest.approx(0.7)
    assert aggregate_windows([1000.0, 1000.0], "lse") == pytest.approx(1000.0)
    assert aggregate_windows([-3.0], "max") == -3.0


@pytest.mark.parametrize("bad, how, match", [([], "mean", "zero windows"), ([1.0], "median", "unknown"),
                                             ([float("nan")], "mean", "finite")])
def test_aggregate_windows_rejects(bad, how, match):
    with pytest.raises(ValueError, match=match):
        aggregate_windows(bad, how)


def test_sigmoid_stable():
    assert sigmoid(0.0) == 0.5
    assert sigmoid(800.0) == 1.0 and sigmoid(-800.0) == 0.0
    assert sigmoid(2.0) == pytest.approx(1 / (1 + math.exp(-2)))


def test_binary_metrics_by_hand():
    # ranking: 0.9 fake, 0.6 real, 0.4 fake, 0.1 real
    m = binary_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
    assert m["acc"] == pytest.approx(0.5)            # 0.1 right, 0.6 wrong, 0.4 wrong, 0.9 right
    assert m["auc"] == pytest.approx(3 / 4)          # 3 of 4 (fake, real) pairs ordered right
    assert m["ap"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert (m["n"], m["n_pos"], m["n_neg"], m["note"]) == (4, 2, 2, "")
    assert binary_metrics([1], [0.5])["acc"] == 1.0   # the threshold itself counts as fake


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.clip(0.3 * y + rng.uniform(0, 0.7, 200), 0, 1)
    m = binary_metrics(y, s, threshold=0.4)
    assert m["auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["ap"] == pytest.approx(average_precision_score(y, s))
    assert m["acc"] == pytest.approx(np.mean((s >= 0.4) == y))


def test_single_class_gives_none_with_reason():
    m = binary_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert m["ap"] is None and m["auc"] is None and "only fake" in m["note"]
    assert m["acc"] == pytest.approx(2 / 3)
    empty = binary_metrics([], [])
    assert empty["acc"] is None and empty["n"] == 0 and empty["note"] == "no videos"


@pytest.mark.parametrize("labels, scores, match", [([0, 2], [0.1, 0.2], "labels"), ([0, 1], [0.1], "length"),
                                                   ([0, 1], [0.1, float("nan")], "finite")])
def test_binary_metrics_rejects(labels, scores, match):
    with pytest.raises(ValueError, match=match):
        binary_metrics(labels, scores)


def test_group_metrics_pair_fake_categories_with_all_reals():
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0, 1])
    scores = np.array([0.1, 0.3, 0.7, 0.6, 0.2, 0.9, 0.8, 0.4, 0.45])
    groups = ["real", "real", "real", "A", "A", "B", "B", "mixed", "mixed"]
    out = group_metrics(labels, scores, groups)
    assert list(out) == ["A", "B", "mixed", "real"]
    reals = labels == 0
    for g in ("A", "B"):
        fakes = np.array(groups) == g
        pair = fakes | reals
        assert out[g]["auc"] == pytest.approx(roc_auc_score(labels[pair], scores[pair]))
        assert out[g]["ap"] == pytest.approx(average_precision_score(labels[pair], scores[pair]))
        assert out[g]["acc"] == pytest.approx(np.mean(scores[fakes] >= 0.5))     # own videos only
        assert out[g]["n"] == 2 and out[g]["n_ranked"] == 2 + 4
        assert "vs all 4 real(s)" in out[g]["note"]
    assert out["mixed"]["auc"] == pytest.approx(1.0) and out["mixed"]["n_ranked"] == 2   # own reals and fakes
    assert out["real"]["auc"] is None and out["real"]["acc"] == pytest.approx(2 / 3)
    assert "ACC alone" in out["real"]["note"]


def test_group_metrics_without_any_real():
    out = group_metrics([1, 1], [0.2, 0.8], ["A", ""])
    assert set(out) == {"A", "(none)"}
    assert out["A"]["auc"] is None and "no real videos" in out["A"]["note"]


def test_coverage_counts_reasons():
    c = coverage([None, "", "no_face", "unreadable", "no_face", None])
    assert c == {"n": 6, "n_scored": 3, "n_failed": 3, "failed_by_reason": {"no_face": 2, "unreadable": 1}}


def test_mean_std_sample_std():
    ms = mean_std([0.8, 0.9, 1.0])
    assert ms["mean"] == pytest.approx(0.9) and ms["std"] == pytest.approx(0.1)   # ddof=1
    assert mean_std([0.5])["std"] is None
    assert mean_std([None, 0.4, 0.6]) == {"mean": pytest.approx(0.5), "std": pytest.approx(math.sqrt(0.02)),
                                          "n": 2, "n_missing": 1}
