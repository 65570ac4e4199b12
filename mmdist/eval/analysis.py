"""Every evaluation metric from the per-clip rows read back from the embedding Parquet files.

`compute_metrics(rows, eval_cfg, model_info)` -> (metrics, artifacts): `metrics` is the JSON of
`metrics.json` (sections retrieval, retrieval_action, retrieval_full_video, discovery, probe,
clustering, codebook); `artifacts` holds what only the report draws (curves, matrices, maps).
Each section uses the clips that have what it needs (both modalities present, a label) and
says how many it used. Every comparison reads the columns `embedding_columns` names: for an MMV
FAC model, video and audio in the fine space S_va (their pair, and each on its own in the probe and
clustering), anything with text in the coarse S_vat (SPEC 8.6).
"""

from __future__ import annotations

from itertools import permutations

import numpy as np

from mmdist.contracts import MODALITIES
from mmdist.eval import codebook
from mmdist.eval.clustering import clustering_metrics, kmeans_labels
from mmdist.eval.discovery import cosine_scores, discovery_curves, discovery_metrics
from mmdist.eval.embed import embedding_columns
from mmdist.eval.probe import linear_probe, split_by_group
from mmdist.eval.retrieval import full_video_similarity, retrieval_metrics, sampled_retrieval


def modalities_of(rows: dict) -> list[str]:
    return [m for m in MODALITIES if f"emb_{m}" in rows]


def label_ids(rows: dict, label: str) -> tuple[np.ndarray, list[str]]:
    """`label_<label>` as ints `[N]` (-1 where the clip has no label) and the sorted label names."""
    column = f"label_{label}"
    if column not in rows:
        raise KeyError(f"the embedding rows have no column {column!r} (eval config names label {label!r})")
    values = np.asarray(rows[column], dtype=object)
    known = np.array([value is not None for value in values])
    names = sorted({str(value) for value in values[known]})
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[str(value)] if value is not None else -1 for value in values], dtype=np.int64), names


def both_present(rows: dict, a: str, b: str) -> np.ndarray:
    return rows[f"present_{a}"].astype(bool) & rows[f"present_{b}"].astype(bool)


def retrieval_section(rows: dict, cfg: dict, seed: int, groups: np.ndarray | None) -> dict:
    """Every ordered modality pair, "<query>-><candidate>", on the clips that have both."""
    section = {}
    for query, candidate in permutations(modalities_of(rows), 2):
        keep = both_present(rows, query, candidate)
        if groups is not None:
            keep &= groups >= 0
        if keep.sum() < 2:
            continue
        query_column, candidate_column = embedding_columns(rows, query, candidate)
        section[f"{query}->{candidate}"] = sampled_retrieval(
            rows[query_column][keep],
            rows[candidate_column][keep],
            cfg["similarity"],
            cfg["chunk_size"],
            cfg["rank_block"],
            cfg["retrieval"]["num_candidates"],
            cfg["retrieval"]["draws"],
            seed,
            None if groups is None else groups[keep],
        )
    return section


def full_video_section(rows: dict, cfg: dict) -> dict:
    """Text -> full video by caption averaging (MCN Sec. 4.5): a source video's captions against
    every source video's clips."""
    if "emb_text" not in rows or "emb_video" not in rows:
        return {}
    captions, clips = rows["present_text"].astype(bool), rows["present_video"].astype(bool)
    sources = np.asarray(rows["source_id"], dtype=object).astype(str)
    shared = np.intersect1d(sources[captions], sources[clips])
    captions &= np.isin(sources, shared)
    clips &= np.isin(sources, shared)
    if len(shared) < 2:
        return {}
    text_column, video_column = embedding_columns(rows, "text", "video")
    scores, _ = full_video_similarity(
        rows[text_column][captions], sources[captions], rows[video_column][clips], sources[clips], cfg["similarity"], cfg["chunk_size"]
    )
    metrics = retrieval_metrics(scores)
    metrics.update(num_videos=len(shared), num_captions=int(captions.sum()))
    return {"text->video": metrics}


def discovery_section(rows: dict, cfg: dict, artifacts: dict) -> dict:
    label = cfg["discovery"]["label"]
    if f"label_{label}" not in rows:
        return {}
    values = np.asarray(rows[f"label_{label}"], dtype=object)
    known = np.array([value is not None for value in values])
    section = {}
    for anchor, other in cfg["discovery"]["pairs"]:
        if f"emb_{anchor}" not in rows or f"emb_{other}" not in rows:
            continue
        keep = both_present(rows, anchor, other) & known
        labels = values[keep].astype(bool)
        if keep.sum() < 2 or labels.all() or not labels.any():
            continue
        anchor_column, other_column = embedding_columns(rows, anchor, other)
        scores = cosine_scores(rows[anchor_column][keep], rows[other_column][keep])
        name = f"{anchor}-{other}"
        section[name] = discovery_metrics(scores, labels)
        artifacts.setdefault("discovery_curves", {})[name] = discovery_curves(scores, labels)
    return section


def probe_section(rows: dict, cfg: dict, seed: int) -> dict:
    probe = cfg["probe"]
    labels, _ = label_ids(rows, probe["label"])
    sources = np.asarray(rows["source_id"], dtype=object).astype(str)
    section = {}
    for m in probe["modalities"]:
        if f"emb_{m}" not in rows:
            continue
        keep = rows[f"present_{m}"].astype(bool) & (labels >= 0)
        if len(np.unique(sources[keep])) < 2 or len(np.unique(labels[keep])) < 2:
            continue
        test = split_by_group(sources[keep], probe["test_fraction"], seed)
        (column,) = embedding_columns(rows, m)
        x, y = rows[column][keep], labels[keep]
        try:
            section[m] = linear_probe(x[~test], y[~test], x[test], y[test], probe["regularization_c"], probe["max_iter"])
        except ValueError as err:  # a split too small for a probe: say so, keep the other sections
            section[m] = {"skipped": str(err)}
    return section


def clustering_section(rows: dict, cfg: dict, seed: int) -> dict:
    """k-means on each modality's embeddings and on the fused mean of all of them (MCN eq. 4), the
    fused one in the space where all of them meet."""
    clustering = cfg["clustering"]
    labels, names = label_ids(rows, clustering["label"])
    modalities = modalities_of(rows)
    spaces = {}
    for m in modalities:
        (column,) = embedding_columns(rows, m)
        spaces[m] = (rows[column], rows[f"present_{m}"].astype(bool))
    all_present = np.all([rows[f"present_{m}"] for m in modalities], axis=0)
    fused = [rows[column] for column in embedding_columns(rows, *modalities)]
    normalised = [x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) for x in fused]
    spaces["fused"] = (np.mean(normalised, axis=0), all_present)
    section = {}
    for name, (embeddings, present) in spaces.items():
        keep = present & (labels >= 0)
        k = clustering["num_clusters"] or len(np.unique(labels[keep]))
        if keep.sum() <= k or k < 2:
            continue
        predicted = kmeans_labels(embeddings[keep], k, seed, clustering["n_init"])
        section[name] = clustering_metrics(labels[keep], predicted)
    return section


def codebook_section(rows: dict, cfg: dict, model_info: dict, artifacts: dict) -> dict:
    """CMCM Sec. 4.3 on the code indices of the evaluation clips (needs a model with a codebook).

    Usage figures and the codebook map always; with labels also label purity, Table 2, the Fig. 3
    matrices and the localisation of the table's top codewords."""
    modalities = [m for m in modalities_of(rows) if f"codes_{m}" in rows]
    if not modalities:
        return {}
    codebook_cfg = cfg["codebook"]
    num_codes = model_info["num_codes"]
    usage = {m: codebook.code_usage(rows[f"codes_{m}"], num_codes) for m in modalities}
    section = codebook.usage_summary(usage, codebook_cfg["joint_threshold"])
    section["joint_threshold"] = codebook_cfg["joint_threshold"]
    stacked = np.stack([usage[m] for m in modalities])  # [M, V]
    active = np.flatnonzero(stacked.sum(axis=0) > 0)
    artifacts["codebook_map"] = {
        "codes": active,
        "points": codebook.codebook_map(model_info["codebook"], active, cfg["report"]["map_method"], cfg["seed"]),
        "dominant": codebook.dominant_modality(stacked, codebook_cfg["joint_threshold"])[active],
        "modalities": modalities,
        "threshold": codebook_cfg["joint_threshold"],
    }

    labels, names = label_ids(rows, codebook_cfg["label"])
    if not names:  # unlabelled clips
        return section
    if codebook_cfg["table_modality"] not in modalities:
        raise ValueError(f"eval.codebook.table_modality = {codebook_cfg['table_modality']!r}: the model has codes for {modalities} only")
    counts = {m: codebook.code_label_counts(rows[f"codes_{m}"], labels, len(names), num_codes) for m in modalities}
    for m in modalities:
        section[f"label_purity_{m}"] = codebook.label_purity(counts[m])
    section["table_modality"] = codebook_cfg["table_modality"]
    section["table"] = codebook.codeword_table(counts, names, codebook_cfg["table_modality"], codebook_cfg["table_rows"], codebook_cfg["min_occurrence"])
    maps = {
        row["code"]: {m: codebook.codeword_localisation(rows[f"codes_{m}"], model_info["grids"][m], row["code"]) for m in modalities}
        for row in section["table"][: codebook_cfg["localise_codes"]]
    }
    section["localisation"] = [{"code": code, **localisation_centres(by_modality)} for code, by_modality in maps.items()]
    artifacts.update(
        label_names=names,
        heatmap=codebook.heatmap_selection(counts, codebook_cfg["table_modality"], codebook_cfg["heatmap_labels"], codebook_cfg["heatmap_codes"]),
        localisation_maps=maps,
    )
    return section


def localisation_centres(maps: dict[str, np.ndarray]) -> dict:
    """Where a codeword fires, in numbers (CMCM Fig. 4): per modality, the occurrence-weighted mean
    cell on each axis of its grid, scaled to [0, 1] (video: time, row, column; audio: time; text:
    word position), and its occurrences per clip."""
    out = {}
    for m, frequency in maps.items():
        if frequency.sum() == 0:
            continue
        axes = {"video": ("time", "row", "column"), "audio": ("time",), "text": ("word",)}[m]
        cells = np.indices(frequency.shape).reshape(frequency.ndim, -1)  # [axes, cells]
        weights = frequency.ravel() / frequency.sum()
        centre = (cells * weights).sum(axis=1) / np.maximum(np.array(frequency.shape) - 1, 1)
        out[m] = {axis: float(value) for axis, value in zip(axes, centre)}
        out[m]["per_clip"] = float(frequency.sum())
    return out


def compute_metrics(rows: dict, eval_cfg: dict, model_info: dict) -> tuple[dict, dict]:
    """All sections of metrics.json from the embedding rows; `model_info` gives `num_codes`, the
    `codebook [V, D]` and the code position `grids` per modality (empty without a codebook)."""
    seed = eval_cfg["seed"]
    group_label = eval_cfg["retrieval"]["group_label"]
    artifacts: dict = {}
    metrics = {
        "num_clips": int(len(rows["clip_id"])),
        "retrieval": retrieval_section(rows, eval_cfg, seed, None),
        "retrieval_action": retrieval_section(rows, eval_cfg, seed, label_ids(rows, group_label)[0]) if group_label else {},
        "retrieval_full_video": full_video_section(rows, eval_cfg),
        "discovery": discovery_section(rows, eval_cfg, artifacts),
        "probe": probe_section(rows, eval_cfg, seed),
        "clustering": clustering_section(rows, eval_cfg, seed),
        "codebook": codebook_section(rows, eval_cfg, model_info, artifacts) if model_info.get("num_codes") else {},
    }
    return metrics, artifacts
