"""The trainer (configs/trainer/default.yaml), validation and logging (configs/train.yaml) and eval
(configs/eval/default.yaml) sections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

from omegaconf import MISSING


@dataclass
class Trainer:  # configs/trainer/default.yaml
    num_workers: int = MISSING
    use_gpu: bool = MISSING
    cpus_per_worker: float = MISSING
    torch_threads: int = MISSING
    max_steps: int = MISSING
    zero_stage: int = MISSING
    precision: str = MISSING
    offload_optimizer: bool = MISSING
    grad_accum_steps: int = MISSING
    grad_clip: float = MISSING
    nonfinite: str = MISSING
    max_consecutive_skips: int = MISSING
    lr: float = MISSING
    betas: List[float] = MISSING
    weight_decay: float = MISSING
    weight_decay_min_ndim: int = MISSING
    warmup_steps: int = MISSING
    warmup_min_ratio: float = MISSING
    min_lr_ratio: float = MISSING
    report_every: int = MISSING
    checkpoint_every: int = MISSING
    keep_checkpoints: int = MISSING
    max_failures: int = MISSING
    storage_path: Optional[str] = MISSING
    run_name: str = MISSING
    log_level: str = MISSING
    data_progress_bars: bool = MISSING
    fault_injection: Optional[str] = MISSING


@dataclass
class Validation:
    path: Optional[str] = MISSING
    every: int = MISSING
    limit: Optional[int] = MISSING
    batch_size: int = MISSING


@dataclass
class TrainMlflow:
    enabled: bool = MISSING
    tracking_uri: Optional[str] = MISSING
    experiment_name: str = MISSING
    run_name: str = MISSING


@dataclass
class TrainLogging:
    tensorboard: bool = MISSING
    every_s: float = MISSING
    mlflow: TrainMlflow = MISSING


# ---------------------------------------------------------------- eval (configs/eval/default.yaml)


@dataclass
class EvalExtract:
    actors: int = MISSING
    cpus_per_actor: float = MISSING
    gpus_per_actor: Any = MISSING  # auto | a number (mmdist/eval/extract.py checks it)
    torch_threads: int = MISSING


@dataclass
class EvalRetrieval:
    num_candidates: int = MISSING
    draws: int = MISSING
    group_label: Optional[str] = MISSING


@dataclass
class EvalDiscovery:
    label: str = MISSING
    pairs: List[List[str]] = MISSING


@dataclass
class EvalProbe:
    label: str = MISSING
    modalities: List[str] = MISSING
    test_fraction: float = MISSING
    regularization_c: float = MISSING
    max_iter: int = MISSING


@dataclass
class EvalClustering:
    label: str = MISSING
    num_clusters: Optional[int] = MISSING
    n_init: int = MISSING


@dataclass
class EvalCodebook:
    label: str = MISSING
    table_modality: str = MISSING
    table_rows: int = MISSING
    min_occurrence: int = MISSING
    joint_threshold: float = MISSING
    heatmap_labels: int = MISSING
    heatmap_codes: int = MISSING
    localise_codes: int = MISSING


@dataclass
class EvalReport:
    enabled: bool = MISSING
    map_method: str = MISSING


@dataclass
class Eval:
    seed: int = MISSING
    decode_from_checkpoint: bool = MISSING
    batch_size: int = MISSING
    similarity: str = MISSING
    chunk_size: int = MISSING
    rank_block: int = MISSING
    extract: EvalExtract = MISSING
    retrieval: EvalRetrieval = MISSING
    discovery: EvalDiscovery = MISSING
    probe: EvalProbe = MISSING
    clustering: EvalClustering = MISSING
    codebook: EvalCodebook = MISSING
    report: EvalReport = MISSING
