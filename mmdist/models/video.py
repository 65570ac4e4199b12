"""Video encoder f_fine^v: an R(2+1)D residual network (SPEC Sec. 2).

Every 3D convolution is factorised into a spatial (1 x k x k) and a temporal (k_t x 1 x 1)
convolution, as in R(2+1)D (MMV Sec. 4.3 uses R(2+1)D-18). The network is built only from
Conv3d, BatchNorm3d, ReLU and `Residual`, which is what makes MMV's deflation (Sec. 3.2,
`mmdist.models.deflation`) a layer-by-layer swap to Conv2d / BatchNorm2d.

The fine-grained features H^v are the positions of the last feature map, t x h x w of them.

`model.video.backbone` picks the network: `r2plus1d` (this module, every width configurable) or
`torchvision` (R(2+1)D-18, R3D-18, MC3-18, S3D, MViT from torchvision, `mmdist.models.torchvision_video`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import math

import torch
from torch import nn

from mmdist.config import (
    ConfigError,
    number,
    one_of,
    positive_int,
    positive_ints,
    positive_number,
)
from mmdist.models.layers import Residual

BACKBONES = ("r2plus1d", "torchvision")
# R(2+1)D's residual blocks use 3 x 3 spatial kernels; the temporal kernel is config.
BLOCK_SPATIAL_KERNEL = 3


def conv2plus1d(
    in_channels: int,
    out_channels: int,
    spatial_kernel: int,
    spatial_stride: int,
    temporal_kernel: int,
    temporal_stride: int,
) -> nn.Sequential:
    """Spatial conv -> BN -> ReLU -> temporal conv; 'same' padding so sizes shrink only by stride."""
    return nn.Sequential(
        nn.Conv3d(
            in_channels,
            out_channels,
            kernel_size=(1, spatial_kernel, spatial_kernel),
            stride=(1, spatial_stride, spatial_stride),
            padding=(0, spatial_kernel // 2, spatial_kernel // 2),
            bias=False,
        ),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv3d(
            out_channels,
            out_channels,
            kernel_size=(temporal_kernel, 1, 1),
            stride=(temporal_stride, 1, 1),
            padding=(temporal_kernel // 2, 0, 0),
            bias=False,
        ),
    )


def residual_block(
    in_channels: int, out_channels: int, spatial_stride: int, temporal_stride: int, temporal_kernel: int
) -> Residual:
    """Two (2+1)D convolutions with BN; a strided 1x1x1 projection when the shape changes."""
    body = nn.Sequential(
        conv2plus1d(in_channels, out_channels, BLOCK_SPATIAL_KERNEL, spatial_stride, temporal_kernel, temporal_stride),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
        conv2plus1d(out_channels, out_channels, BLOCK_SPATIAL_KERNEL, 1, temporal_kernel, 1),
        nn.BatchNorm3d(out_channels),
    )
    if in_channels == out_channels and spatial_stride == 1 and temporal_stride == 1:
        shortcut: nn.Module = nn.Identity()
    else:
        shortcut = nn.Sequential(
            nn.Conv3d(
                in_channels,
                out_channels,
                kernel_size=1,
                stride=(temporal_stride, spatial_stride, spatial_stride),
                bias=False,
            ),
            nn.BatchNorm3d(out_channels),
        )
    return Residual(body, shortcut)


class VideoEncoder(nn.Module):
    """uint8 video `[B, T, H, W, 3]` -> fine features H^v `[B, t*h*w, C]` (all positions valid)."""

    IGNORED_WEIGHT_PREFIXES: tuple[str, ...] = ()  # a weights file holds this whole encoder (mmdist.models.pretrained)

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        stem_channels: int,
        stem_spatial_kernel: int,
        stem_spatial_stride: int,
        stem_temporal_kernel: int,
        stem_temporal_stride: int,
        channels: Sequence[int],
        blocks: Sequence[int],
        spatial_strides: Sequence[int],
        temporal_strides: Sequence[int],
        temporal_kernel: int,
        pool: str,
    ):
        super().__init__()
        # Not persistent: they come from the config, checkpoints hold only learned state.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1, 1), persistent=False)
        layers: list[nn.Module] = [
            conv2plus1d(
                3, stem_channels, stem_spatial_kernel, stem_spatial_stride, stem_temporal_kernel, stem_temporal_stride
            ),
            nn.BatchNorm3d(stem_channels),
            nn.ReLU(inplace=True),
        ]
        width = stem_channels
        for out_channels, depth, spatial_stride, temporal_stride in zip(
            channels, blocks, spatial_strides, temporal_strides
        ):
            for index in range(depth):
                first = index == 0
                layers.append(
                    residual_block(
                        width,
                        out_channels,
                        spatial_stride if first else 1,
                        temporal_stride if first else 1,
                        temporal_kernel,
                    )
                )
                width = out_channels
        self.backbone = nn.Sequential(*layers)
        self.out_channels = width
        self.pool = pool
        self.temporal_stride = stem_temporal_stride * _product(temporal_strides)
        self.spatial_stride = stem_spatial_stride * _product(spatial_strides)

    def normalise(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 `[B, T, H, W, 3]` -> float `[B, 3, T, H, W]`, scaled to [0, 1] then standardised."""
        video = video.permute(0, 4, 1, 2, 3).to(self.mean.dtype) / 255.0  # [B, 3, T, H, W]
        return (video - self.mean) / self.std

    def feature_map(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 `[B, T, H, W, 3]` -> backbone output `[B, C, t, h, w]`."""
        return self.backbone(self.normalise(video).to(self.dtype))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        features = self.feature_map(video)  # [B, C, t, h, w]
        return features.flatten(2).transpose(1, 2)  # [B, t*h*w, C]

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone[0][0].weight.dtype

    def grid(self, num_frames: int, size: int) -> tuple[int, int, int]:
        """(t, h, w) positions of the last feature map for `num_frames` frames of `size`^2 pixels
        ('same' padding everywhere: each axis is ceil(input / total stride))."""
        side = math.ceil(size / self.spatial_stride)
        return math.ceil(num_frames / self.temporal_stride), side, side

    def pretrained_module(self) -> nn.Module:
        return self


def _product(values: Sequence[int]) -> int:
    result = 1
    for value in values:
        result *= value
    return result


def rgb_mean_std(cfg: Mapping, path: str) -> tuple[list[float], list[float]]:
    """`<path>.mean` and `.std`: 3 numbers each (R, G, B), the std positive."""
    for key in ("mean", "std"):
        values = cfg[key]
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != 3:
            raise ConfigError(f"{path}.{key} must list 3 numbers (R, G, B), got {values!r}")
    return [number(v, f"{path}.mean") for v in cfg["mean"]], [positive_number(v, f"{path}.std") for v in cfg["std"]]


def build_video_encoder(
    cfg: Mapping, num_frames: int | None = None, size: int | None = None, path: str = "model.video"
) -> nn.Module:
    """Build the encoder of `model.video.backbone` from its config section, checking every key.
    A torchvision backbone needs the input `num_frames` and `size` (data.video.*) to lay out its positions."""
    backbone = cfg.get("backbone") if isinstance(cfg, Mapping) else None
    if backbone == "torchvision":
        from mmdist.models.torchvision_video import build_torchvision_video_encoder

        if num_frames is None or size is None:
            raise ConfigError(f"{path}.backbone = torchvision needs data.video.num_frames and data.video.size")
        return build_torchvision_video_encoder(cfg, num_frames, size, path)
    one_of(backbone, BACKBONES, f"{path}.backbone")
    channels = positive_ints(cfg["channels"], f"{path}.channels")
    stages = len(channels)
    mean, std = rgb_mean_std(cfg, path)
    for key in ("stem_spatial_kernel", "stem_temporal_kernel", "temporal_kernel"):
        if positive_int(cfg[key], f"{path}.{key}") % 2 == 0:
            raise ConfigError(f"{path}.{key} must be odd ('same' padding), got {cfg[key]}")
    one_of(cfg["pool"], ("mean", "max"), f"{path}.pool")
    return VideoEncoder(
        mean=mean,
        std=std,
        stem_channels=positive_int(cfg["stem_channels"], f"{path}.stem_channels"),
        stem_spatial_kernel=cfg["stem_spatial_kernel"],
        stem_spatial_stride=positive_int(cfg["stem_spatial_stride"], f"{path}.stem_spatial_stride"),
        stem_temporal_kernel=cfg["stem_temporal_kernel"],
        stem_temporal_stride=positive_int(cfg["stem_temporal_stride"], f"{path}.stem_temporal_stride"),
        channels=channels,
        blocks=positive_ints(cfg["blocks"], f"{path}.blocks", stages),
        spatial_strides=positive_ints(cfg["spatial_strides"], f"{path}.spatial_strides", stages),
        temporal_strides=positive_ints(cfg["temporal_strides"], f"{path}.temporal_strides", stages),
        temporal_kernel=cfg["temporal_kernel"],
        pool=cfg["pool"],
    )
