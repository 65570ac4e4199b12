"""The sweep (configs/sweep/*.yaml) and study (configs/study/*.yaml) sections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from mmdist.config_schema.variants import Variants, one_of


@dataclass
class Asha:
    name: str = MISSING
    grace_period: int = MISSING
    reduction_factor: int = MISSING
    brackets: int = MISSING


@dataclass
class Fifo:
    name: str = MISSING


@dataclass
class SweepMlflow:
    enabled: bool = MISSING
    tracking_uri: Optional[str] = MISSING
    experiment_name: Optional[str] = MISSING


@dataclass
class FinalEval:
    enabled: bool = MISSING
    data_path: Optional[str] = MISSING
    overrides: List[str] = MISSING


@dataclass
class Sweep:
    name: str = MISSING
    num_samples: int = MISSING
    max_concurrent: int = MISSING
    metric: str = MISSING
    mode: str = MISSING
    best_scope: str = MISSING
    seed: int = MISSING
    scheduler: Any = one_of(Variants("name", {"asha": Asha, "fifo": Fifo}))
    space: Dict[str, Any] = MISSING  # distributions by config key (mmdist/tune/space.py checks them)
    storage_path: Optional[str] = MISSING
    resume: bool = MISSING
    max_failures: int = MISSING
    trial_resources: Dict[str, float] = MISSING
    mlflow: SweepMlflow = MISSING
    final_eval: FinalEval = MISSING


# ---------------------------------------------------------------- study (configs/study/*.yaml)


@dataclass
class StudyRow:
    label: str = MISSING
    overrides: List[str] = MISSING
    paper: Optional[Dict[str, float]] = MISSING
    warm_start: Optional[str] = MISSING


@dataclass
class Study:
    name: str = MISSING
    paper: str = MISSING
    scale: str = MISSING
    scales: Dict[str, List[str]] = MISSING
    seeds: List[int] = MISSING
    max_concurrent: int = MISSING
    common: List[str] = MISSING
    rows: Dict[str, StudyRow] = MISSING
    metrics: Dict[str, Any] = MISSING  # {mean_of: [...], higher_is_better?, scale?} (mmdist/tune/study.py checks them)
    claims: List[Any] = MISSING  # their keys depend on their kind (mmdist/tune/study.py checks them)
