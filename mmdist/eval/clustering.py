"""Clustering metrics (MCN Appendix B.2): NMI, ARI, Hungarian accuracy, <H>, <p_max>.

Units follow MCN Table 3: NMI, ARI, accuracy and purity in percent, the mean per-cluster label
entropy <H> in nats (eq. B.1); means run over the non-empty clusters.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import entropy
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix


def hungarian_accuracy(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Accuracy after the one-to-one cluster -> label matching that maximises it (Kuhn-Munkres)."""
    table = contingency_matrix(labels_true, labels_pred)  # [labels, clusters] counts
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def clustering_metrics(labels_true: np.ndarray, labels_pred: np.ndarray) -> dict[str, float]:
    """MCN Appendix B.2 for ground-truth `labels_true [N]` and cluster ids `labels_pred [N]`.

    <H> = 1/K sum_k H(p(y | cluster k)) (eq. B.1), <p_max> = 1/K sum_k max_y p(y | cluster k) (eq. B.2).
    """
    labels_true, labels_pred = np.asarray(labels_true), np.asarray(labels_pred)
    if labels_true.shape != labels_pred.shape or labels_true.ndim != 1 or len(labels_true) == 0:
        raise ValueError(f"clustering needs two equal, non-empty label vectors, got {labels_true.shape} and {labels_pred.shape}")
    table = contingency_matrix(labels_true, labels_pred)  # [labels, clusters], only non-empty clusters
    label_given_cluster = table / table.sum(axis=0, keepdims=True)  # columns: p(y | cluster k)
    return {
        "nmi": float(100.0 * normalized_mutual_info_score(labels_true, labels_pred)),
        "ari": float(100.0 * adjusted_rand_score(labels_true, labels_pred)),
        "accuracy": float(100.0 * hungarian_accuracy(labels_true, labels_pred)),
        "mean_entropy": float(np.mean(entropy(label_given_cluster, axis=0))),
        "mean_max_purity": float(100.0 * np.mean(label_given_cluster.max(axis=0))),
        "num_clusters": int(table.shape[1]),
    }


def kmeans_labels(embeddings: np.ndarray, num_clusters: int, seed: int, n_init: int) -> np.ndarray:
    """k-means cluster ids of L2-normalised embeddings (cosine geometry, as MCN's clustering; SPEC 8.5)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if num_clusters < 2 or num_clusters > len(x):
        raise ValueError(f"k-means needs 2 <= clusters <= clips, got {num_clusters} clusters for {len(x)} clips")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return KMeans(n_clusters=num_clusters, n_init=n_init, random_state=seed).fit_predict(x)
