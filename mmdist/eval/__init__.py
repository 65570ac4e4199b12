"""Evaluation (SPEC Sec. 5): extraction job, retrieval, discovery, probe, clustering, codebook, report.

`evaluate(...)` runs the whole chain (checkpoint -> Parquet embeddings -> metrics.json -> report);
`embed_batch` and `validation_metrics` serve the training loop's periodic held-out evaluation
(mmdist.train.loop imports `mmdist.eval.embed` and `mmdist.eval.validation` directly).

The names below are imported on first use, so that importing one light module of the package
(a training worker's `mmdist.eval.validation`) does not pull the job, the report and matplotlib.
"""

import importlib

_HOMES = {  # name -> the module of mmdist.eval that defines it
    "clustering_metrics": "clustering", "hungarian_accuracy": "clustering", "kmeans_labels": "clustering",
    "code_label_counts": "codebook", "code_usage": "codebook", "codeword_localisation": "codebook",
    "codeword_table": "codebook", "dominant_modality": "codebook", "label_given_code": "codebook",
    "usage_summary": "codebook",
    "cosine_scores": "discovery", "discovery_curves": "discovery", "discovery_metrics": "discovery",
    "embed_batch": "embed", "embedding_columns": "embed", "read_embeddings": "embed", "rows_to_table": "embed",
    "table_to_rows": "embed",
    "EmbeddingExtractor": "extract", "extract_embeddings": "extract",
    "check_eval_config": "job", "evaluate": "job",
    "linear_probe": "probe", "split_by_group": "probe",
    "chunked_ranks": "retrieval", "full_video_similarity": "retrieval",
    "metrics_from_ranks": "retrieval", "ranks_from_similarity": "retrieval", "retrieval_metrics": "retrieval",
    "sampled_retrieval": "retrieval",
    "validation_metrics": "validation",
}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'mmdist.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"mmdist.eval.{_HOMES[name]}"), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "EmbeddingExtractor",
    "check_eval_config",
    "chunked_ranks",
    "clustering_metrics",
    "code_label_counts",
    "code_usage",
    "codeword_localisation",
    "codeword_table",
    "cosine_scores",
    "discovery_curves",
    "discovery_metrics",
    "dominant_modality",
    "embed_batch",
    "embedding_columns",
    "evaluate",
    "extract_embeddings",
    "full_video_similarity",
    "hungarian_accuracy",
    "kmeans_labels",
    "label_given_code",
    "linear_probe",
    "metrics_from_ranks",
    "ranks_from_similarity",
    "read_embeddings",
    "retrieval_metrics",
    "rows_to_table",
    "sampled_retrieval",
    "split_by_group",
    "table_to_rows",
    "usage_summary",
    "validation_metrics",
]
