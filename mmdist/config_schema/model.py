"""The model group (configs/model/*.yaml; each encoder by its backbone) and the recipe
(configs/recipe/*.yaml; by its name)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from mmdist.config_schema.variants import Variants, one_of


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
