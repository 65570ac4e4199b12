"""Linear probe: hand-worked scores, scikit-learn references and a group-respecting split."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, top_k_accuracy_score

from mmdist.eval import linear_probe, split_by_group
from mmdist.eval.probe import probe_scores


def test_hand_worked_scores():
    classes = np.array(["a", "b", "c"])
    test_y = np.array(["a", "a", "b", "c"])
    probabilities = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.8, 0.1], [0.5, 0.1, 0.4]])
    scores = probe_scores(test_y, probabilities, classes)
    assert scores["top1"] == 50.0  # clips 0 and 2
    assert scores["mean_class_accuracy"] == pytest.approx(100 * (0.5 + 1 + 0) / 3)  # per-class recall a, b, c
    assert scores["top5"] == 100.0  # k >= K: every class is in the top k
    expected_map = np.mean([average_precision_score(test_y == c, probabilities[:, i]) for i, c in enumerate(classes)])
    assert scores["map"] == pytest.approx(expected_map)


def test_top_k_matches_scikit_learn():
    rng = np.random.default_rng(0)
    classes = np.arange(8)
    test_y = rng.integers(0, 8, 100)
    probabilities = rng.dirichlet(np.ones(8), size=100)
    from mmdist.eval.probe import top_k_hits

    for k in (1, 3, 5):
        assert 100 * top_k_hits(test_y, probabilities, classes, k).mean() == pytest.approx(
            100 * top_k_accuracy_score(test_y, probabilities, k=k, labels=classes)
        )


def test_separable_classes_are_learned():
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=5, size=(4, 6))
    y = np.repeat(np.arange(4), 20)
    x = centres[y] + rng.normal(scale=0.3, size=(80, 6))
    order = rng.permutation(80)
    train, test = order[:40], order[40:]
    scores = linear_probe(x[train], y[train], x[test], y[test], regularization_c=1.0, max_iter=500)
    assert scores["top1"] == 100.0 and scores["mean_class_accuracy"] == 100.0
    assert scores["map"] == pytest.approx(1.0) and scores["mean_auc"] == pytest.approx(1.0)
    assert scores["num_test"] == 40 and scores["num_classes"] == 4


def test_unseen_test_classes_are_left_out_and_counted():
    x = np.array([[0.0], [0.1], [5.0], [5.1], [9.0]])
    y = np.array([0, 0, 1, 1, 2])
    scores = linear_probe(x[:4], y[:4], x[[0, 2, 4]], y[[0, 2, 4]], regularization_c=10.0, max_iter=200)
    assert scores["num_test"] == 2 and scores["unseen_test"] == 1


def test_split_keeps_groups_whole():
    groups = np.repeat([f"s{i}" for i in range(10)], 4)
    test = split_by_group(groups, 0.3, seed=0)
    assert test.sum() == 12  # 3 of 10 sources, 4 clips each
    for name in np.unique(groups):
        assert len(set(test[groups == name])) == 1
    assert np.array_equal(test, split_by_group(groups, 0.3, seed=0))
    with pytest.raises(ValueError, match="test_fraction"):
        split_by_group(groups, 1.0, seed=0)
