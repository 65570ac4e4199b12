"""Audio encoder f_fine^a: a 1D ResNet over log-mel frames (SPEC Sec. 2).

Mel bins are channels and frames the sequence, as in the "Spectrogram + 1D-ResNet" audio
encoders of CMCM Table 4 (ResDAVEnet). The log-mel input is standardised with a fixed mean and
std from the config: loudness (silent vs. sounding clips, MC3) is kept, which a per-clip
normalisation would erase, and no batch statistic is taken over a subset of frames that may be
empty on one rank and not on another (a collective called by some ranks only would hang).

The fine-grained features H^a are the frames of the last feature map; padded frames are
carried through as zeros and masked at the output.

`model.audio.backbone` picks the network: `resnet1d` (this module) or `resnet2d` (torchvision's
ResNet over the log-mel image, `mmdist.models.audio_resnet2d`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
from mmdist.models.layers import Residual, downsample_mask

BACKBONES = ("resnet1d", "resnet2d")

def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int) -> nn.Sequential:
    """Conv1d with 'same' padding (length shrinks only by the stride: ceil(F / stride)) + BN."""
    return nn.Sequential(
        nn.Conv1d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm1d(out_channels),
    )


def residual_block(in_channels: int, out_channels: int, stride: int, kernel: int) -> Residual:
    body = nn.Sequential(
        conv_bn(in_channels, out_channels, kernel, stride),
        nn.ReLU(inplace=True),
        conv_bn(out_channels, out_channels, kernel, 1),
    )
    if in_channels == out_channels and stride == 1:
        shortcut: nn.Module = nn.Identity()
    else:
        shortcut = conv_bn(in_channels, out_channels, 1, stride)
    return Residual(body, shortcut)


def standardise(mel: torch.Tensor, frame_mask: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Standardise the log-mel `[B, n_mels, F]` with the config's mean / std; padded frames -> 0 (the mean level)."""
    standardised = (mel - mean) / std
    return torch.where(frame_mask.unsqueeze(1), standardised, torch.zeros_like(standardised))


class AudioEncoder(nn.Module):
    """log-mel `[B, n_mels, F]` + frame mask `[B, F]` -> H^a `[B, f, C]` and its mask `[B, f]`."""

    IGNORED_WEIGHT_PREFIXES: tuple[str, ...] = ()  # a weights file holds this whole encoder (mmdist.models.pretrained)

    def __init__(
        self,
        n_mels: int,
        mean: float,
        std: float,
        stem_channels: int,
        stem_kernel: int,
        stem_stride: int,
        channels: Sequence[int],
        blocks: Sequence[int],
        strides: Sequence[int],
        kernel: int,
        pool: str,
    ):
        super().__init__()
        self.mean, self.std = mean, std
        layers: list[nn.Module] = [conv_bn(n_mels, stem_channels, stem_kernel, stem_stride), nn.ReLU(inplace=True)]
        width = stem_channels
        for out_channels, depth, stride in zip(channels, blocks, strides):
            for index in range(depth):
                layers.append(residual_block(width, out_channels, stride if index == 0 else 1, kernel))
                width = out_channels
        self.backbone = nn.Sequential(*layers)
        self.out_channels = width
        self.pool = pool
        self.stride = stem_stride
        for stride in strides:
            self.stride *= stride

    def forward(self, mel: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = self.backbone[0][0].weight.dtype
        features = self.backbone(standardise(mel.float(), frame_mask, self.mean, self.std).to(dtype))  # [B, C, f]
        mask = downsample_mask(frame_mask, self.stride, features.shape[-1])  # [B, f]
        return features.transpose(1, 2), mask  # [B, f, C], [B, f]

    def pretrained_module(self) -> nn.Module:
        return self


def build_audio_encoder(cfg: Mapping, n_mels: int, path: str = "model.audio") -> nn.Module:
    """Build the encoder of `model.audio.backbone` for `n_mels` mel bands, checking every key."""
    backbone = cfg.get("backbone") if isinstance(cfg, Mapping) else None
    if backbone == "resnet2d":
        from mmdist.models.audio_resnet2d import build_resnet2d_audio_encoder

        return build_resnet2d_audio_encoder(cfg, path)
    one_of(backbone, BACKBONES, f"{path}.backbone")
    channels = positive_ints(cfg["channels"], f"{path}.channels")
    for key in ("stem_kernel", "kernel"):
        if positive_int(cfg[key], f"{path}.{key}") % 2 == 0:
            raise ConfigError(f"{path}.{key} must be odd ('same' padding), got {cfg[key]}")
    if cfg["pool"] not in ("mean", "max"):
        raise ConfigError(f"{path}.pool must be 'mean' or 'max', got {cfg['pool']!r}")
    return AudioEncoder(
        n_mels=n_mels,
        mean=number(cfg["mean"], f"{path}.mean"),
        std=positive_number(cfg["std"], f"{path}.std"),
        stem_channels=positive_int(cfg["stem_channels"], f"{path}.stem_channels"),
        stem_kernel=cfg["stem_kernel"],
        stem_stride=positive_int(cfg["stem_stride"], f"{path}.stem_stride"),
        channels=channels,
        blocks=positive_ints(cfg["blocks"], f"{path}.blocks", len(channels)),
        strides=positive_ints(cfg["strides"], f"{path}.strides", len(channels)),
        kernel=cfg["kernel"],
        pool=cfg["pool"],
    )

