"""Sounding-action discovery against a hand-worked case and the pairwise definition of ROC-AUC."""

from __future__ import annotations

import numpy as np
import pytest

from mmdist.eval import cosine_scores, discovery_curves, discovery_metrics


def test_hand_worked_case():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    labels = np.array([True, False, True, False])
    metrics = discovery_metrics(scores, labels)
    # positive/negative pairs ordered correctly: (0.9, 0.8) (0.9, 0.6) (0.7, 0.6) of 4
    assert metrics["roc_auc"] == pytest.approx(0.75)
    # positives at ranks 1 and 3: precision 1 and 2/3
    assert metrics["pr_auc"] == pytest.approx((1 + 2 / 3) / 2)
    assert metrics["positive_rate"] == 0.5 and metrics["num_clips"] == 4


def test_roc_auc_is_the_probability_a_positive_outscores_a_negative():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=60), 1)  # rounded: ties count one half
    labels = rng.random(60) < 0.4
    pos, neg = scores[labels], scores[~labels]
    pairwise = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert discovery_metrics(scores, labels)["roc_auc"] == pytest.approx(pairwise)


def test_curves_end_at_the_corners():
    rng = np.random.default_rng(1)
    scores, labels = rng.normal(size=30), rng.random(30) < 0.5
    curves = discovery_curves(scores, labels)
    assert curves["roc"]["fpr"][0] == 0 and curves["roc"]["tpr"][-1] == 1
    assert curves["pr"]["recall"][0] == 1 and curves["pr"]["recall"][-1] == 0


def test_single_class_is_an_error():
    with pytest.raises(ValueError, match="both sounding and silent"):
        discovery_metrics(np.arange(4.0), np.ones(4, dtype=bool))


def test_cosine_scores():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    b = np.array([[3.0, 0.0], [-1.0, -1.0], [0.0, 5.0]])
    np.testing.assert_allclose(cosine_scores(a, b), [1.0, -1.0, 0.0], atol=1e-12)
