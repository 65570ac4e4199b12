"""Evaluation (SPEC Sec. 5): extraction job, retrieval, discovery, probe, clustering, codebook, report.

`evaluate(...)` runs the whole chain (checkpoint -> Parquet embeddings -> metrics.json -> report);
`embed_batch` and `validation_metrics` serve the training loop's periodic held-out evaluation.
"""

from mmdist.eval.clustering import clustering_metrics, hungarian_accuracy, kmeans_labels
from mmdist.eval.codebook import (
    code_label_counts,
    code_usage,
    codeword_localisation,
    codeword_table,
    dominant_modality,
    label_given_code,
    usage_summary,
)
from mmdist.eval.discovery import cosine_scores, discovery_curves, discovery_metrics
from mmdist.eval.embed import embed_batch, embedding_columns, read_embeddings, rows_to_table, table_to_rows, to_torch_batch
from mmdist.eval.extract import EmbeddingExtractor, extract_embeddings
from mmdist.eval.job import check_eval_config, evaluate
from mmdist.eval.probe import linear_probe, split_by_group
from mmdist.eval.retrieval import (
    chunked_ranks,
    chunked_topk,
    full_video_similarity,
    metrics_from_ranks,
    ranks_from_similarity,
    retrieval_metrics,
    sampled_retrieval,
)
from mmdist.eval.validation import validation_metrics

__all__ = [
    "EmbeddingExtractor",
    "check_eval_config",
    "chunked_ranks",
    "chunked_topk",
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
    "to_torch_batch",
    "usage_summary",
    "validation_metrics",
]
