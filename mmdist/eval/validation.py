"""Cheap held-out metrics for the training loop (reported through `ray.train.report`, used by Tune).

A flat dict of floats with a `val_` prefix, from a few hundred clips in well under a second:
R@1 / R@5 in both directions of every modality pair (full similarity matrix, cosine, the
pessimistic ranks of `retrieval_metrics`), their means, and the sounding-action discovery
ROC-AUC when the `sounding` label is known. Each pair is compared in its own space
(`embedding_columns`: S_va for video-audio of an MMV FAC model, else `emb_<m>`).
"""

from __future__ import annotations

from itertools import permutations

import numpy as np

from mmdist.contracts import MODALITIES
from mmdist.eval.discovery import cosine_scores, discovery_metrics
from mmdist.eval.embed import embedding_columns
from mmdist.eval.retrieval import retrieval_metrics, similarity_space

DISCOVERY_PAIRS = {"val_discovery_roc_auc": ("audio", "video"), "val_discovery_roc_auc_audio_text": ("audio", "text")}


def validation_metrics(rows: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, float]:
    """rows: `embed_batch` output concatenated over the held-out set (`emb_<m> [N, D]`, `present_<m> [N]`,
    a FAC model's `emb_va_<m>`); labels: `label_<field> [N]` (object arrays, None where unknown), e.g. `label_sounding`.

    Keys: `val_r1_<q>_<c>`, `val_r5_<q>_<c>` (percent) for every ordered pair with at least 2 clips
    having both modalities, `val_mean_r1`, `val_mean_r5`, `val_clips`, and `val_discovery_roc_auc`
    (audio-video; `_audio_text` for audio-text) when `label_sounding` has both classes.
    """
    modalities = [m for m in MODALITIES if f"emb_{m}" in rows]
    out: dict[str, float] = {"val_clips": float(len(next(iter(rows.values())))) if rows else 0.0}
    r1, r5 = [], []
    for query, candidate in permutations(modalities, 2):
        keep = rows[f"present_{query}"].astype(bool) & rows[f"present_{candidate}"].astype(bool)
        if keep.sum() < 2:
            continue
        query_column, candidate_column = embedding_columns(rows, query, candidate)
        q = similarity_space(rows[query_column][keep], "cosine")
        c = similarity_space(rows[candidate_column][keep], "cosine")
        metrics = retrieval_metrics(q @ c.T)
        out[f"val_r1_{query}_{candidate}"], out[f"val_r5_{query}_{candidate}"] = metrics["R@1"], metrics["R@5"]
        r1.append(metrics["R@1"])
        r5.append(metrics["R@5"])
    if r5:
        out["val_mean_r1"], out["val_mean_r5"] = float(np.mean(r1)), float(np.mean(r5))
    sounding = labels.get("label_sounding")
    if sounding is None:
        return out
    sounding = np.asarray(sounding, dtype=object)
    known = np.array([value is not None for value in sounding])
    for name, (a, b) in DISCOVERY_PAIRS.items():
        if f"emb_{a}" not in rows or f"emb_{b}" not in rows:
            continue
        keep = known & rows[f"present_{a}"].astype(bool) & rows[f"present_{b}"].astype(bool)
        values = sounding[keep].astype(bool)
        if values.any() and not values.all():
            column_a, column_b = embedding_columns(rows, a, b)
            out[name] = discovery_metrics(cosine_scores(rows[column_a][keep], rows[column_b][keep]), values)["roc_auc"]
    return out
