"""Linear probe on frozen embeddings (MC3 Table 4, MMV Sec. 4): top-1, top-5, mCA, mAP, mAUC.

A multinomial logistic regression (scikit-learn) on standardised embeddings. The train / test split
is by group (the source video): temporally neighbouring clips of one source share their object and
scene, and a probe that saw a clip's neighbour would measure memory, not the representation.
Accuracies are percentages (MC3 Table 4); mAP and mean AUC are areas in [0, 1].
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, balanced_accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def split_by_group(groups: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean test mask `[N]`: a seeded random `test_fraction` of the distinct groups, whole groups only."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"eval.probe.test_fraction must be in (0, 1), got {test_fraction}")
    names = np.unique(np.asarray(groups))
    if len(names) < 2:
        raise ValueError(f"the probe split needs at least 2 source videos, got {len(names)}")
    order = np.random.default_rng(seed).permutation(len(names))
    num_test = min(max(1, round(test_fraction * len(names))), len(names) - 1)
    return np.isin(groups, names[order[:num_test]])


def top_k_hits(test_y: np.ndarray, probabilities: np.ndarray, classes: np.ndarray, k: int) -> np.ndarray:
    """Whether each clip's class is among its k most probable (all of them when k >= K)."""
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]  # [N, min(k, K)]
    return (classes[top] == test_y[:, None]).any(axis=1)


def probe_scores(test_y: np.ndarray, probabilities: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    """The five figures from class probabilities `[N, K]` over `classes [K]` (test labels all in `classes`)."""
    predicted = classes[probabilities.argmax(axis=1)]
    with warnings.catch_warnings():  # predictions of classes no test clip has are expected, not news
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        mean_class_accuracy = float(100.0 * balanced_accuracy_score(test_y, predicted))
    onehot = test_y[:, None] == classes[None, :]  # [N, K]
    with_positive = onehot.any(axis=0)  # AP needs a positive, AUC a positive and a negative
    with_both = with_positive & ~onehot.all(axis=0)
    return {
        "top1": float(100.0 * np.mean(predicted == test_y)),
        "top5": float(100.0 * np.mean(top_k_hits(test_y, probabilities, classes, k=5))),
        "mean_class_accuracy": mean_class_accuracy,
        "map": float(np.mean([average_precision_score(onehot[:, k], probabilities[:, k]) for k in np.flatnonzero(with_positive)])),
        "mean_auc": float(np.mean([roc_auc_score(onehot[:, k], probabilities[:, k]) for k in np.flatnonzero(with_both)]))
        if with_both.any() else float("nan"),
    }


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    regularization_c: float,
    max_iter: int,
) -> dict[str, float]:
    """Fit on (train_x, train_y), score on the test clips whose class the probe saw in training.

    Returns top1, top5, mean_class_accuracy (mean per-class recall), map, mean_auc, and the counts
    `num_train`, `num_test`, `num_classes`, `unseen_test` (test clips of classes absent from train).
    """
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    classes = np.unique(train_y)
    if len(classes) < 2:
        raise ValueError(f"the linear probe needs at least 2 classes in its training split, got {classes.tolist()}")
    seen = np.isin(test_y, classes)
    if not seen.any():
        raise ValueError("no test clip belongs to a class of the probe's training split")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=regularization_c, max_iter=max_iter))
    model.fit(train_x, train_y)
    probabilities = model.predict_proba(test_x[seen])  # [N_test, K], columns in model.classes_ order
    scores = probe_scores(test_y[seen], probabilities, model.classes_)
    scores.update(
        num_train=int(len(train_y)), num_test=int(seen.sum()), num_classes=int(len(classes)), unseen_test=int((~seen).sum())
    )
    return scores
