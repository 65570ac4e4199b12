"""One class per job (configs/<job>.yaml), made of the sections; `JOBS` by job name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

from omegaconf import MISSING

from mmdist.config_schema.benchmarks import SUITES
from mmdist.config_schema.data import (
    Data,
    IngestAudio,
    IngestVideo,
    Ray,
    RayTasks,
    Storage,
    World,
    WorldAudio,
    WorldText,
    WorldVideo,
)
from mmdist.config_schema.model import RECIPES, Model
from mmdist.config_schema.train import Eval, TrainLogging, Trainer, Validation
from mmdist.config_schema.tune import Study, Sweep
from mmdist.config_schema.variants import one_of


@dataclass
class Train:  # configs/train.yaml
    seed: int = MISSING
    run_dir: str = MISSING
    verbose: bool = MISSING
    validation: Validation = MISSING
    logging: TrainLogging = MISSING
    model: Model = MISSING
    data: Data = MISSING
    storage: Storage = MISSING
    trainer: Trainer = MISSING
    ray: Ray = MISSING
    eval: Eval = MISSING
    recipe: Any = one_of(RECIPES)


@dataclass
class SweepJob(Train):  # configs/sweep.yaml
    sweep: Sweep = MISSING


@dataclass
class DemoWorld:
    train_clips: int = MISSING
    val_clips: int = MISSING
    seed: int = MISSING
    overrides: List[str] = MISSING  # make_dataset overrides


@dataclass
class Demo(Train):  # configs/demo.yaml
    world: DemoWorld = MISSING


@dataclass
class EvalMlflow:
    run_id: Optional[str] = MISSING
    tracking_uri: Optional[str] = MISSING


@dataclass
class EvalLogging:
    mlflow: EvalMlflow = MISSING


@dataclass
class Evaluate:  # configs/evaluate.yaml
    checkpoint: str = MISSING
    training_run_dir: Optional[str] = MISSING
    run_dir: str = MISSING
    data_progress_bars: bool = MISSING
    verbose: bool = MISSING
    logging: EvalLogging = MISSING
    data: Data = MISSING
    storage: Storage = MISSING
    ray: Ray = MISSING
    eval: Eval = MISSING


@dataclass
class Embed:  # configs/embed.yaml
    checkpoint: str = MISSING
    out: str = MISSING
    data_progress_bars: bool = MISSING
    data: Data = MISSING
    storage: Storage = MISSING
    ray: Ray = MISSING
    eval: Eval = MISSING


@dataclass
class Export:  # configs/export.yaml
    checkpoint: str = MISSING
    out: str = MISSING
    storage: Storage = MISSING


@dataclass
class CheckData:  # configs/check_data.yaml
    seed: int = MISSING
    examples_per_reason: int = MISSING
    data: Data = MISSING
    storage: Storage = MISSING
    ray: Ray = MISSING


@dataclass
class DeflateSettings:  # configs/deflate.yaml, deflate: (mmdist/eval/deflation.py)
    max_clips: int = MISSING
    test_fraction: float = MISSING
    steps: int = MISSING
    lr: float = MISSING
    batch_size: int = MISSING
    label: str = MISSING
    probe_c: float = MISSING
    probe_max_iter: int = MISSING


@dataclass
class Deflate:  # configs/deflate.yaml
    checkpoint: str = MISSING
    run_dir: str = MISSING
    seed: int = MISSING
    deflate: DeflateSettings = MISSING
    data: Data = MISSING
    storage: Storage = MISSING


@dataclass
class Ingest:  # configs/ingest.yaml
    manifest: str = MISSING
    out: str = MISSING
    rows_per_shard: int = MISSING
    workers: int = MISSING
    overwrite: bool = MISSING
    skip_invalid_entries: bool = MISSING
    tasks: RayTasks = MISSING
    video: IngestVideo = MISSING
    audio: IngestAudio = MISSING
    storage: Storage = MISSING


@dataclass
class MakeDataset:  # configs/make_dataset.yaml
    out: str = MISSING
    num_clips: int = MISSING
    seed: int = MISSING
    rows_per_shard: int = MISSING
    workers: int = MISSING
    overwrite: bool = MISSING
    tasks: RayTasks = MISSING
    world: World = MISSING
    text: WorldText = MISSING
    video: WorldVideo = MISSING
    audio: WorldAudio = MISSING
    storage: Storage = MISSING


@dataclass
class ReproduceWorld:
    train_clips: int = MISSING
    test_clips: int = MISSING
    seed: int = MISSING
    dir: Optional[str] = MISSING
    overrides: List[str] = MISSING  # make_dataset overrides


@dataclass
class Reproduce:  # configs/reproduce.yaml
    run_dir: str = MISSING
    ray: Ray = MISSING
    study: Study = MISSING
    world: ReproduceWorld = MISSING


@dataclass
class Benchmark:  # configs/benchmark.yaml
    out: Optional[str] = MISSING
    suite: Any = one_of(SUITES)


JOBS = {
    "train": Train,
    "sweep": SweepJob,
    "demo": Demo,
    "evaluate": Evaluate,
    "embed": Embed,
    "export": Export,
    "check_data": CheckData,
    "deflate": Deflate,
    "ingest": Ingest,
    "make_dataset": MakeDataset,
    "reproduce": Reproduce,
    "benchmark": Benchmark,
}
