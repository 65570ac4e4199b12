"""Sounding-action discovery (MC3 Sec. 6.1): does cross-modal agreement predict that an action sounds?

The score of a clip is the cosine similarity of its audio and video embeddings (or audio and text);
against the binary `sounding` label it gives a ROC curve and a precision-recall curve, summarised by
their areas (threshold-free, "invariant to the absolute score values", MC3 Sec. 6.1).
PR-AUC is scikit-learn's average precision (the step-wise area, which does not interpolate
optimistically between operating points as the trapezoidal rule does).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve


def cosine_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of `a [N, D]` and `b [N, D]` -> `[N]`."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"cosine_scores needs equal shapes, got {list(a.shape)} and {list(b.shape)}")
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return np.einsum("nd,nd->n", a, b) / norms


def _check_binary(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores and labels must be equal-length vectors, got {list(scores.shape)} and {list(labels.shape)}")
    if not np.isfinite(scores).all():
        raise ValueError("discovery scores hold NaN or inf values")
    labels = labels.astype(bool)
    if labels.all() or not labels.any():
        raise ValueError(f"discovery needs both sounding and silent clips; all {len(labels)} labels are {bool(labels[0]) if len(labels) else None}")
    return scores, labels


def discovery_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ROC-AUC and PR-AUC (average precision) of `scores [N]` against boolean `labels [N]`.

    Also `positive_rate` (the PR-AUC of a random scorer) and `num_clips`."""
    scores, labels = _check_binary(scores, labels)
    return {
        "roc_auc": float(roc_auc_score(labels, scores)),
        "pr_auc": float(average_precision_score(labels, scores)),
        "positive_rate": float(labels.mean()),
        "num_clips": int(len(labels)),
    }


def discovery_curves(scores: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, list[float]]]:
    """The ROC curve (`fpr`, `tpr`) and the PR curve (`recall`, `precision`) for plotting and saving."""
    scores, labels = _check_binary(scores, labels)
    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    return {
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
        "pr": {"recall": recall.tolist(), "precision": precision.tolist()},
    }
