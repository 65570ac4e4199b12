"""Storage, Ray, the data group (configs/data/default.yaml), the synthetic world (configs/make_dataset.yaml)
and ingest (configs/ingest.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from omegaconf import MISSING


@dataclass
class Storage:  # configs/storage/default.yaml
    endpoint_url: Optional[str] = MISSING
    retries: int = MISSING
    backoff_s: float = MISSING
    connect_timeout_s: float = MISSING
    request_timeout_s: float = MISSING


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
    epochs_per_pass: int = MISSING
    limit: Optional[int] = MISSING
    ray_parquet_v2: bool = MISSING
    video: DataVideo = MISSING
    audio: DataAudio = MISSING
    text: DataText = MISSING
    limits: DataLimits = MISSING
    decode: DataDecode = MISSING


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
class RayTasks:  # how jobs with `workers > 0` run their Ray tasks (mmdist/data/parallel.py)
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
