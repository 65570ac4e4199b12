"""Clustering metrics (MCN Appendix B.2) against a hand-worked case and brute force."""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pytest

from mmdist.eval import clustering_metrics, hungarian_accuracy, kmeans_labels


def test_hand_worked_case():
    truth = np.array([0, 0, 1, 1, 2, 2])
    clusters = np.array([1, 1, 0, 0, 0, 2])
    metrics = clustering_metrics(truth, clusters)
    # cluster 1 -> label 0 (2 clips), cluster 0 -> label 1 (2), cluster 2 -> label 2 (1)
    assert metrics["accuracy"] == pytest.approx(100 * 5 / 6)
    # cluster 0 holds labels (1, 1, 2): entropy of (2/3, 1/3); the other two clusters are pure
    h = -(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3))
    assert metrics["mean_entropy"] == pytest.approx(h / 3)
    assert metrics["mean_max_purity"] == pytest.approx(100 * (1 + 2 / 3 + 1) / 3)
    assert metrics["num_clusters"] == 3


def test_perfect_clustering_under_relabelling():
    truth = np.array([0, 0, 1, 1, 2, 2, 2])
    metrics = clustering_metrics(truth, np.array([5, 5, 9, 9, 7, 7, 7]))
    assert metrics["nmi"] == pytest.approx(100) and metrics["ari"] == pytest.approx(100)
    assert metrics["accuracy"] == 100 and metrics["mean_entropy"] == 0 and metrics["mean_max_purity"] == 100


def test_hungarian_accuracy_equals_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(5):
        truth, clusters = rng.integers(0, 4, 40), rng.integers(0, 4, 40)
        best = max(np.mean(np.array(mapping)[clusters] == truth) for mapping in permutations(range(4)))
        assert hungarian_accuracy(truth, clusters) == pytest.approx(best)


def test_kmeans_finds_separated_groups():
    rng = np.random.default_rng(1)
    directions = np.eye(3)
    truth = np.repeat(np.arange(3), 10)
    x = directions[truth] * rng.uniform(1, 5, size=(30, 1)) + rng.normal(scale=0.05, size=(30, 3))
    predicted = kmeans_labels(x, 3, seed=0, n_init=2)
    assert clustering_metrics(truth, predicted)["accuracy"] == 100.0
