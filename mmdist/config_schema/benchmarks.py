"""The benchmark suites (configs/suite/*.yaml), chosen by the `suite` config group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from mmdist.config_schema.data import Data, Storage
from mmdist.config_schema.variants import Variants


@dataclass
class TinySetting:
    num_clips: int = MISSING
    rows_per_shard: int = MISSING
    world_config: str = MISSING
    data: Dict[str, Any] = MISSING  # overrides of the data group


@dataclass
class RealisticSetting:
    num_clips: int = MISSING
    rows_per_shard: int = MISSING
    height: int = MISSING
    width: int = MISSING
    fps: int = MISSING
    seconds: float = MISSING
    gop: int = MISSING
    crf: int = MISSING
    preset: str = MISSING
    data: Dict[str, Any] = MISSING


@dataclass
class IngestedSetting:
    fps: float = MISSING
    short_side: int = MISSING
    crf: int = MISSING
    preset: str = MISSING
    rows_per_shard: int = MISSING
    data: Dict[str, Any] = MISSING


@dataclass
class DataSuite:
    settings: List[str] = MISSING
    seed: int = MISSING
    repeats: int = MISSING
    ray_num_cpus: int = MISSING
    out_dir: Optional[str] = MISSING
    data: Data = MISSING
    storage: Storage = MISSING
    tiny: TinySetting = MISSING
    realistic: RealisticSetting = MISSING
    ingested: IngestedSetting = MISSING


@dataclass
class EvalSuite:
    sizes: List[int] = MISSING
    num_queries: Optional[int] = MISSING
    dim: int = MISSING
    k: int = MISSING
    chunk_size: int = MISSING
    rank_block: int = MISSING
    repeats: int = MISSING
    threads: int = MISSING
    seed: int = MISSING
    full_matrix_max_gib: float = MISSING


@dataclass
class GpuVariant:
    name: str = MISSING
    zero_stage: int = MISSING
    channels_last_3d: bool = MISSING
    cudnn_benchmark: bool = MISSING
    compile: bool = MISSING


@dataclass
class GpuSuite:
    overrides: List[str] = MISSING
    micro_batch: int = MISSING
    steps: int = MISSING
    warmup: int = MISSING
    seed: int = MISSING
    loss_tolerance: float = MISSING
    variants: List[GpuVariant] = MISSING
    peak_tflops: List[List[Any]] = MISSING  # [device-name substring, TFLOPS]


@dataclass
class ObjectivesSuite:
    batch_sizes: List[int] = MISSING
    num_codes: int = MISSING
    vq_rows: int = MISSING
    vq_dim: int = MISSING
    repeats: int = MISSING
    threads: int = MISSING
    seed: int = MISSING


@dataclass
class StartupVariant:
    name: str = MISSING
    env: Dict[str, str] = MISSING


@dataclass
class TrainerSuite:
    recipe: str = MISSING
    clips: int = MISSING
    batch_size: int = MISSING
    batches: int = MISSING
    steps: int = MISSING
    warmup: int = MISSING
    torch_threads: int = MISSING
    streaming_steps: int = MISSING
    streaming_workers: int = MISSING
    seed: int = MISSING
    streaming_report_every: int = MISSING
    streaming_baseline_epochs_per_pass: int = MISSING
    startup_steps: int = MISSING
    startup_variants: List[StartupVariant] = MISSING


SUITES = Variants(
    None,
    {"data": DataSuite, "eval": EvalSuite, "gpu": GpuSuite, "objectives": ObjectivesSuite, "trainer": TrainerSuite},
)
