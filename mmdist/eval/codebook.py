"""Codebook analysis (CMCM Sec. 4.3, Appendix E/F): what the shared codewords mean, per modality.

Every valid fine-grained position of a clip (a video cell, an audio frame group, a word of the
clip's own narration) is labelled with the clip's label, as CMCM labels all 27 codewords of a
video with the video's action. Accumulated over the evaluation set this gives, per modality:

- the counts `[labels, V]` and P(label | codeword) (Fig. 3; columns of used codewords sum to 1);
- Table 2: codewords ranked by the precision of their top label, with their occurrence;
- usage by modality and the share of "jointly used" codewords: no modality makes more than
  `threshold` (0.9) of the codeword's uses (Fig. 6);
- where in a clip a codeword fires: its frequency per (time, row, column) cell (Fig. 4).

Codes arrive as `[N, L]` integer arrays with -1 at invalid positions (padding, absent clips).
"""

from __future__ import annotations

import math

import numpy as np

from mmdist.vq import perplexity

UNUSED, JOINT = -2, -1  # dominant-modality markers for unused and jointly used codewords


def code_label_counts(codes: np.ndarray, labels: np.ndarray, num_labels: int, num_codes: int) -> np.ndarray:
    """Counts `[num_labels, V]` of (clip label, codeword) over every valid position.

    codes: `[N, L]` ints, -1 invalid; labels: `[N]` ints in [0, num_labels), -1 for an unlabelled clip."""
    codes, labels = np.asarray(codes), np.asarray(labels)
    if codes.ndim != 2 or labels.shape != (codes.shape[0],):
        raise ValueError(f"codes must be [N, L] and labels [N], got {list(codes.shape)} and {list(labels.shape)}")
    if codes.size and codes.max() >= num_codes:
        raise ValueError(f"codeword index {int(codes.max())} outside a codebook of {num_codes}")
    row_labels = np.broadcast_to(labels[:, None], codes.shape)
    keep = (codes >= 0) & (row_labels >= 0)
    flat = row_labels[keep].astype(np.int64) * num_codes + codes[keep]
    return np.bincount(flat, minlength=num_labels * num_codes).reshape(num_labels, num_codes)


def label_given_code(counts: np.ndarray) -> np.ndarray:
    """P(label | codeword) `[labels, V]` from counts; an unused codeword's column is all zeros."""
    totals = counts.sum(axis=0, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape, dtype=np.float64), where=totals > 0)


def code_usage(codes: np.ndarray, num_codes: int) -> np.ndarray:
    """How often each codeword fires over the valid positions of `codes [N, L]` -> `[V]`."""
    codes = np.asarray(codes)
    return np.bincount(codes[codes >= 0].ravel(), minlength=num_codes)


def dominant_modality(usage: np.ndarray, threshold: float) -> np.ndarray:
    """Per codeword: the index of the modality making more than `threshold` of its uses, JOINT when
    none does, UNUSED when it never fires. `usage [M, V]` -> `[V]` (CMCM Fig. 6)."""
    total = usage.sum(axis=0)  # [V]
    share = np.divide(usage, total, out=np.zeros(usage.shape, dtype=np.float64), where=total > 0)
    dominant = np.where(share.max(axis=0) > threshold, share.argmax(axis=0), JOINT)
    return np.where(total > 0, dominant, UNUSED)


def usage_summary(usage: dict[str, np.ndarray], threshold: float) -> dict:
    """`active_codes`, `perplexity`, `jointly_used_share` (of active codewords) and per-modality figures."""
    modalities = list(usage)
    stacked = np.stack([usage[m] for m in modalities])  # [M, V]
    dominant = dominant_modality(stacked, threshold)
    active = int((dominant != UNUSED).sum())
    summary = {
        "active_codes": active,
        "perplexity": perplexity(stacked.sum(axis=0)),
        "jointly_used": int((dominant == JOINT).sum()),
        "jointly_used_share": float((dominant == JOINT).sum() / active) if active else 0.0,
    }
    for index, m in enumerate(modalities):
        summary[f"active_codes_{m}"] = int((stacked[index] > 0).sum())
        summary[f"perplexity_{m}"] = perplexity(stacked[index])
        summary[f"dominated_by_{m}"] = int((dominant == index).sum())
    return summary


def label_purity(counts: np.ndarray) -> float:
    """Share of positions whose codeword's most frequent label is their own label, in percent: the
    occurrence-weighted mean of the top-label precision (how well codewords alone name the label)."""
    total = counts.sum()
    return float(100.0 * counts.max(axis=0).sum() / total) if total else 0.0


def codeword_table(
    counts: dict[str, np.ndarray], label_names: list[str], table_modality: str, rows: int, min_occurrence: int
) -> list[dict]:
    """CMCM Table 2: codewords of `table_modality` used at least `min_occurrence` times, ranked by the
    precision (percent) of their top label; with the second label and, for every other modality,
    how often it uses the codeword and the precision of the same top label there."""
    if table_modality not in counts:
        raise ValueError(f"eval.codebook.table_modality = {table_modality!r} is not among {list(counts)}")
    base = counts[table_modality]
    occurrence = base.sum(axis=0)
    precision = 100.0 * label_given_code(base)  # [labels, V]
    candidates = np.flatnonzero(occurrence >= min_occurrence)
    top = precision[:, candidates].max(axis=0)
    order = candidates[np.lexsort((-occurrence[candidates], -top))]  # precision desc, then occurrence desc
    table = []
    for rank, code in enumerate(order[:rows], start=1):
        first, second = np.argsort(-precision[:, code], kind="stable")[:2]
        row = {
            "rank": rank,
            "code": int(code),
            "occurrence": int(occurrence[code]),
            "top_label": label_names[first],
            "precision": float(precision[first, code]),
            "second_label": label_names[second] if len(label_names) > 1 else None,
            "second_precision": float(precision[second, code]) if len(label_names) > 1 else 0.0,
        }
        for m, other in counts.items():
            if m != table_modality:
                uses = int(other[:, code].sum())
                row[f"{m}_occurrence"] = uses
                row[f"{m}_precision"] = float(100.0 * other[first, code] / uses) if uses else None
        table.append(row)
    return table


def heatmap_selection(counts: dict[str, np.ndarray], column_modality: str, num_labels: int, num_codes: int) -> dict:
    """Rows and columns of the Fig. 3 matrices: the `num_labels` most frequent labels and the
    `num_codes` codewords `column_modality` uses most, ordered by their top label so the matrix
    reads diagonally; P(label | codeword) of every modality on that grid (NaN columns: codewords
    the modality never used)."""
    base = counts[column_modality]
    labels = np.argsort(-base.sum(axis=1), kind="stable")[:num_labels]
    used = np.flatnonzero(base.sum(axis=0) > 0)
    codes = used[np.argsort(-base.sum(axis=0)[used], kind="stable")[:num_codes]]
    probability = label_given_code(base)
    top_row = np.argmax(probability[labels][:, codes], axis=0)  # position in `labels` of each code's top label
    codes = codes[np.lexsort((-probability[labels][:, codes].max(axis=0), top_row))]
    matrices = {}
    for m, c in counts.items():
        matrix = label_given_code(c)[np.ix_(labels, codes)]
        matrix[:, c[:, codes].sum(axis=0) == 0] = np.nan  # never used by this modality: not "probability 0"
        matrices[m] = matrix
    return {"labels": labels, "codes": codes, "matrices": matrices}


def codeword_localisation(codes: np.ndarray, grid: tuple[int, ...], code: int) -> np.ndarray:
    """How often `code` fires at each cell of the clip's position grid, per clip: `[*grid]`.

    codes: `[N, L]` with L = prod(grid), positions in row-major (time, row, column) order, as the
    video encoder flattens them; for audio the grid is `(positions in time,)`."""
    codes = np.asarray(codes)
    if math.prod(grid) != codes.shape[1]:
        raise ValueError(f"a grid of {grid} cells does not match {codes.shape[1]} code positions per clip")
    return (codes == code).mean(axis=0).reshape(grid)


def codebook_map(codebook: np.ndarray, codes: np.ndarray, method: str, seed: int) -> np.ndarray:
    """2-D coordinates `[len(codes), 2]` of the codewords `codes` (CMCM Fig. 6: t-SNE; or PCA)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    points = np.asarray(codebook, dtype=np.float64)[codes]
    if len(points) < 3:
        return np.zeros((len(points), 2))
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(points)
    if method == "tsne":
        perplexity_ = float(min(30, max(2, (len(points) - 1) // 3)))
        return TSNE(n_components=2, perplexity=perplexity_, init="pca", random_state=seed).fit_transform(points)
    raise ValueError(f"eval.report.map_method must be 'tsne' or 'pca', got {method!r}")
