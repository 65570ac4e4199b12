"""Small building blocks shared by the encoders and heads: residual wrapper, masked pooling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Residual(nn.Module):
    """relu(body(x) + shortcut(x)): the ResNet block, for any number of spatial dims.

    The forward only calls submodules, so `deflate_video_encoder` can swap the 3D layers
    inside for 2D ones and reuse the block unchanged.
    """

    def __init__(self, body: nn.Module, shortcut: nn.Module):
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


def nonempty(mask: torch.Tensor) -> torch.Tensor:
    """`mask [N, L]` with rows that have no valid position made all-valid.

    Rows with nothing valid belong to absent clips or padded candidates; their pooled value is
    ignored downstream (`present` / candidate masks), but it must stay finite.
    """
    return mask | ~mask.any(dim=-1, keepdim=True)


def masked_mean(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `features [N, L, C]` over valid positions `mask [N, L]` -> [N, C]."""
    weights = nonempty(mask).to(features.dtype).unsqueeze(-1)  # [N, L, 1]
    return (features * weights).sum(dim=1) / weights.sum(dim=1)


def masked_max(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max of `features [N, L, C]` over valid positions `mask [N, L]` -> [N, C]."""
    hidden = ~nonempty(mask).unsqueeze(-1)  # [N, L, 1]
    return features.masked_fill(hidden, torch.finfo(features.dtype).min).amax(dim=1)


def masked_pool(features: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """f_high's pooling (CMCM Sec. 2.1: mean over time/space; MMV/MCN text: max over words)."""
    if mode == "mean":
        return masked_mean(features, mask)
    if mode == "max":
        return masked_max(features, mask)
    raise ValueError(f"unknown pooling mode {mode!r}; expected 'mean' or 'max'")


def downsample_mask(mask: torch.Tensor, stride: int, length: int) -> torch.Tensor:
    """Frame mask `[N, F]` -> `[N, length]` after a total stride: a position is valid when any
    input frame in its window is (padding sits at the end, so this is a prefix again)."""
    pooled = F.max_pool1d(mask.float().unsqueeze(1), kernel_size=stride, stride=stride, ceil_mode=True)
    pooled = pooled.squeeze(1).bool()  # [N, ceil(F / stride)]
    if pooled.shape[1] != length:
        raise ValueError(
            f"frame mask of length {mask.shape[1]} downsampled by {stride} gives {pooled.shape[1]} "
            f"positions but the encoder produced {length}"
        )
    return pooled
