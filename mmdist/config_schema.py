"""The schema of every job's config: one dataclass per section, keys and types only.

The values, and the comments that say what they mean, live in `configs/` and nowhere else: no field
here has a default (OmegaConf's MISSING), so a key the YAML lacks is an error, not a silent fallback.
`mmdist.config.check_config(cfg, job)` merges a composed job config into its class of `JOBS` (Hydra's
structured configs), which rejects an unknown key and a value of the wrong type, naming the key.

A section whose keys depend on a value (the recipe on `recipe.name`, an encoder on its `backbone`,
the Tune scheduler on its `name`, a benchmark on its suite) is typed `Any` here and carries its
`Variants` in the field's metadata; the check picks the variant's class and checks the section
against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING


@dataclass(frozen=True)
class Variants:
    """The classes a section can take, chosen by the value of its key `key` (or, with key None, by
    the config group's choice, e.g. `suite=data`)."""

    key: str | None
    classes: dict


def one_of(variants: Variants) -> Any:
    """A field whose class depends on its own content (see `Variants`)."""
    return field(default=MISSING, metadata={"variants": variants})


# ---------------------------------------------------------------- shared sections


@dataclass
class Storage:  # configs/storage/default.yaml
    endpoint_url: Optional[str] = MISSING
    retries: int = MISSING
    backoff_s: float = MISSING


@dataclass
class Ray:  # configs/ray/local.yaml
    address: Optional[str] = MISSING
    num_cpus: Optional[int] = MISSING
    min_local_cpus: int = MISSING
    train_health_check_s: float = MISSING


@dataclass
class DataVideo:
    num_frames: int = MISSING
    fps: float = MISSING
    resize: int = MISSING
    size: int = MISSING
    interpolation: str = MISSING
    threads: int = MISSING


@dataclass
class DataAudio:
    sample_rate: int = MISSING
    n_mels: int = MISSING
    window_ms: float = MISSING
    hop_ms: float = MISSING
    max_seconds: float = MISSING
    log_floor: float = MISSING


@dataclass
class DataText:
    tokenizer: str = MISSING
    vocab_size: int = MISSING
    max_tokens: int = MISSING
    max_candidates: int = MISSING


@dataclass
class DataLimits:
    max_video_bytes: int = MISSING
    max_audio_bytes: int = MISSING
    max_frames: int = MISSING
    max_duration_s: float = MISSING
    max_frame_pixels: int = MISSING
    max_audio_sample_rate: int = MISSING
    max_audio_channels: int = MISSING


@dataclass
class DataDecode:
    concurrency: int = MISSING
    num_cpus: float = MISSING
    batch_size: int = MISSING


@dataclass
class Data:  # configs/data/default.yaml
    path: str = MISSING
    batch_size: int = MISSING
    shuffle_files: bool = MISSING
    limit: Optional[int] = MISSING
    ray_parquet_v2: bool = MISSING
    video: DataVideo = MISSING
    audio: DataAudio = MISSING
    text: DataText = MISSING
    limits: DataLimits = MISSING
    decode: DataDecode = MISSING


# ---------------------------------------------------------------- model (configs/model/*.yaml)


@dataclass
class R2Plus1dVideo:  # mmdist/models/video.py
    backbone: str = MISSING
    weights: Optional[str] = MISSING
    mean: List[float] = MISSING
    std: List[float] = MISSING
    stem_channels: int = MISSING
    stem_spatial_kernel: int = MISSING
    stem_spatial_stride: int = MISSING
    stem_temporal_kernel: int = MISSING
    stem_temporal_stride: int = MISSING
    channels: List[int] = MISSING
    blocks: List[int] = MISSING
    spatial_strides: List[int] = MISSING
    temporal_strides: List[int] = MISSING
    temporal_kernel: int = MISSING
    pool: str = MISSING


@dataclass
class TorchvisionVideo:  # mmdist/models/torchvision_video.py
    backbone: str = MISSING
    weights: Optional[str] = MISSING
    arch: str = MISSING
    mean: List[float] = MISSING
    std: List[float] = MISSING
    pool: str = MISSING


@dataclass
class ResNet1dAudio:  # mmdist/models/audio.py
    backbone: str = MISSING
    weights: Optional[str] = MISSING
    mean: float = MISSING
    std: float = MISSING
    stem_channels: int = MISSING
    stem_kernel: int = MISSING
    stem_stride: int = MISSING
    channels: List[int] = MISSING
    blocks: List[int] = MISSING
    strides: List[int] = MISSING
    kernel: int = MISSING
    pool: str = MISSING


@dataclass
class ResNet2dAudio:  # mmdist/models/audio_resnet2d.py
    backbone: str = MISSING
    weights: Optional[str] = MISSING
    arch: str = MISSING
    mean: float = MISSING
    std: float = MISSING
    pool: str = MISSING


@dataclass
class TransformerText:  # mmdist/models/text.py
    backbone: str = MISSING
    weights: Optional[str] = MISSING
    dim: int = MISSING
    layers: int = MISSING
    heads: int = MISSING
    ff_dim: int = MISSING
    dropout: float = MISSING
    out_channels: int = MISSING
    pool: str = MISSING


@dataclass
class OpenClipText:  # mmdist/models/clip_text.py
    backbone: str = MISSING
    weights: Optional[str] = MISSING
    context_length: int = MISSING
    width: int = MISSING
    heads: int = MISSING
    layers: int = MISSING
    mlp_ratio: float = MISSING
    quick_gelu: bool = MISSING
    out_channels: int = MISSING
    pool: str = MISSING


VIDEO_BACKBONES = Variants("backbone", {"r2plus1d": R2Plus1dVideo, "torchvision": TorchvisionVideo})
AUDIO_BACKBONES = Variants("backbone", {"resnet1d": ResNet1dAudio, "resnet2d": ResNet2dAudio})
TEXT_BACKBONES = Variants("backbone", {"transformer": TransformerText, "open_clip": OpenClipText})


@dataclass
class Codebook:
    enabled: bool = MISSING
    num_codes: int = MISSING
    dim: int = MISSING
    decay: float = MISSING
    dead_after: int = MISSING
    commitment: float = MISSING
    reset_noise: float = MISSING
    seed: int = MISSING
    video_grid: Optional[List[int]] = MISSING
    audio_positions_per_code: int = MISSING
    with_continuous: bool = MISSING
    ema_text: str = MISSING
    norm_momentum: float = MISSING
    norm_eps: float = MISSING


@dataclass
class Fac:
    fine_dim: int = MISSING
    coarse_dim: int = MISSING


@dataclass
class Model:
    name: str = MISSING
    modalities: List[str] = MISSING
    embed_dim: int = MISSING
    video: Any = one_of(VIDEO_BACKBONES)
    audio: Any = one_of(AUDIO_BACKBONES)
    text: Any = one_of(TEXT_BACKBONES)
    codebook: Codebook = MISSING
    head: str = MISSING
    fac: Fac = MISSING
    reconstruction: bool = MISSING
    reconstruction_hidden_dim: int = MISSING
    init_checkpoint: Optional[str] = MISSING


# ---------------------------------------------------------------- recipe (configs/recipe/*.yaml)


@dataclass
class Recipe:
    name: str = MISSING
    modalities: List[str] = MISSING


@dataclass
class CmcmRecipe(Recipe):
    mms_margin: float = MISSING
    cmcm_alpha: float = MISSING


@dataclass
class Mc3Recipe(Recipe):
    temperature: float = MISSING
    anchor: str = MISSING
    consensus_alphas: Dict[str, float] = MISSING
    consensus_inverse: str = MISSING
    consensus_weight: float = MISSING
    align_steps: int = MISSING
    refine_contrastive: bool = MISSING


@dataclass
class Mc3VqRecipe(Mc3Recipe):
    cmcm_alpha: float = MISSING


@dataclass
class KMeans:
    num_clusters: int = MISSING
    queue_batches: int = MISSING
    refit_every: int = MISSING
    iters: int = MISSING


@dataclass
class McnRecipe(Recipe):
    mms_margin: float = MISSING
    cluster_margin: float = MISSING
    cluster_weight: float = MISSING
    reconstruct_weight: float = MISSING
    kmeans: KMeans = MISSING


@dataclass
class MmvRecipe(Recipe):
    temperature: float = MISSING
    lambda_va: float = MISSING
    lambda_vt: float = MISSING


RECIPES = Variants(
    "name", {"cmcm": CmcmRecipe, "mc3": Mc3Recipe, "mc3_vq": Mc3VqRecipe, "mcn": McnRecipe, "mmv": MmvRecipe}
)


# ---------------------------------------------------------------- trainer, validation, logging


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


# ---------------------------------------------------------------- sweep (configs/sweep/*.yaml)


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
    job: str = MISSING
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


# ---------------------------------------------------------------- the synthetic world and ingest


@dataclass
class WorldRegions:
    I: float = MISSING
    II: float = MISSING
    III: float = MISSING
    IV: float = MISSING


@dataclass
class WorldMissing:
    video: float = MISSING
    audio: float = MISSING
    text: float = MISSING


@dataclass
class World:
    num_verbs: int = MISSING
    num_nouns: int = MISSING
    clips_per_source: int = MISSING
    region_proportions: WorldRegions = MISSING
    missing: WorldMissing = MISSING


@dataclass
class WorldText:
    candidates: int = MISSING
    synonym_prob: float = MISSING


@dataclass
class WorldVideo:
    num_frames: int = MISSING
    size: int = MISSING
    fps: float = MISSING
    crf: int = MISSING
    preset: str = MISSING
    noise_std: float = MISSING
    object_radius: float = MISSING
    motion_amplitude: float = MISSING
    position_jitter: float = MISSING
    ball_radius: int = MISSING
    ball_hop_px: float = MISSING


@dataclass
class WorldAudio:
    sample_rate: int = MISSING
    noise_floor: float = MISSING
    action_gain: List[float] = MISSING
    background_gain: float = MISSING
    background_hops: List[int] = MISSING
    background_sound: str = MISSING


@dataclass
class RayTasks:  # how jobs with `workers > 0` run their Ray tasks (mmdist/data/tasks.py)
    num_cpus: float = MISSING
    max_retries: int = MISSING


@dataclass
class IngestVideo:
    fps: Optional[float] = MISSING
    short_side: Optional[int] = MISSING
    crf: int = MISSING
    preset: str = MISSING


@dataclass
class IngestAudio:
    sample_rate: int = MISSING


# ---------------------------------------------------------------- benchmark suites (configs/suite/*.yaml)


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
    startup_steps: int = MISSING
    startup_variants: List[StartupVariant] = MISSING


SUITES = Variants(
    None,
    {"data": DataSuite, "eval": EvalSuite, "gpu": GpuSuite, "objectives": ObjectivesSuite, "trainer": TrainerSuite},
)


# ---------------------------------------------------------------- jobs (configs/<job>.yaml)


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
    "ingest": Ingest,
    "make_dataset": MakeDataset,
    "reproduce": Reproduce,
    "benchmark": Benchmark,
}
