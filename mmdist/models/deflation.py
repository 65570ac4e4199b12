"""MMV's video-to-image network deflation (MMV Sec. 3.2, SPEC Sec. 3).

Deflation sums each 3D kernel over time to get a 2D kernel, so that on an image the deflated
network computes what the video network computes on the static video made of that image,
except near the clip's temporal boundary where the video network's zero padding sees zeros.
To absorb that boundary effect, the batch-norm gamma / beta of the deflated network are
re-learnt with an L1 loss to the video network's outputs on static videos, every other
parameter frozen (`fit_deflation`). `jobs/deflate.py` runs both on a trained model and evaluates
them on still frames (mmdist.eval.deflation).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from mmdist.models.layers import Residual, masked_pool
from mmdist.models.video import VideoEncoder

# Layers that act per frame (or have no parameters) and are kept as they are.
_PASS_THROUGH = (nn.ReLU, nn.Identity, nn.Sequential, Residual)


class ImageEncoder(nn.Module):
    """uint8 images `[B, H, W, 3]` -> pooled features `[B, C]`, the image counterpart of f_v."""

    def __init__(self, backbone: nn.Module, mean: torch.Tensor, std: torch.Tensor, pool: str):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", mean.reshape(1, 3, 1, 1).clone(), persistent=False)
        self.register_buffer("std", std.reshape(1, 3, 1, 1).clone(), persistent=False)
        self.pool = pool

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).to(self.mean.dtype) / 255.0  # [B, 3, H, W]
        features = self.backbone((x - self.mean) / self.std)  # [B, C, h, w]
        positions = features.flatten(2).transpose(1, 2)  # [B, h*w, C]
        return pool_positions(positions, self.pool)


def pool_positions(features: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool `[B, L, C]` over all positions -> `[B, C]` (the encoder's f_high pooling)."""
    every = torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
    return masked_pool(features, every, mode)


def video_features(encoder: VideoEncoder, video: torch.Tensor) -> torch.Tensor:
    """Pooled video features `[B, C]`, the target the deflated network must match."""
    return pool_positions(encoder(video), encoder.pool)


def _deflate_conv(conv: nn.Conv3d) -> nn.Conv2d:
    if conv.padding_mode != "zeros":
        raise TypeError(f"cannot deflate {conv}: padding_mode {conv.padding_mode!r} (only zero padding)")
    flat = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size[1:],
        stride=conv.stride[1:],
        padding=conv.padding[1:],
        dilation=conv.dilation[1:],
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        flat.weight.copy_(conv.weight.sum(dim=2))  # [out, in/groups, t, k, k] -> [out, in/groups, k, k]
        if conv.bias is not None:
            flat.bias.copy_(conv.bias)
    return flat.to(conv.weight.device, conv.weight.dtype)


def _deflate_norm(norm: nn.modules.batchnorm._BatchNorm) -> nn.BatchNorm2d:
    flat = nn.BatchNorm2d(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
    flat = flat.to(next(iter(norm.state_dict().values())).device)
    flat.load_state_dict(norm.state_dict())  # gamma, beta, running statistics
    return flat


def _deflate(module: nn.Module) -> nn.Module:
    """Swap every 3D layer of `module` (a copy) for its 2D counterpart, recursively."""
    for name, child in module.named_children():
        if isinstance(child, nn.Conv3d):
            setattr(module, name, _deflate_conv(child))
        elif isinstance(child, nn.modules.batchnorm._BatchNorm):  # BatchNorm3d or a synchronised variant
            setattr(module, name, _deflate_norm(child))
        elif isinstance(child, _PASS_THROUGH):
            _deflate(child)
        else:
            raise TypeError(f"cannot deflate layer {name!r} of type {type(child).__name__}")
    return module


def deflate_video_encoder(encoder: VideoEncoder) -> ImageEncoder:
    """Naive deflation (MMV Table 3 'n-def'): 3D kernels summed over time, batch norms copied."""
    backbone = _deflate(copy.deepcopy(encoder.backbone))
    return ImageEncoder(backbone, encoder.mean, encoder.std, encoder.pool)


def fit_deflation(
    video_encoder: VideoEncoder,
    image_encoder: ImageEncoder,
    images: torch.Tensor,
    steps: int,
    lr: float,
    num_frames: int,
) -> list[float]:
    """Re-learn the image encoder's batch-norm gamma / beta (MMV Sec. 3.2, Table 3 'def').

    Minimises mean |image_encoder(x) - video_features(video_encoder, static video of x)| over
    the uint8 `images [N, H, W, 3]` with Adam (MMV Sec. 4.4 uses Adam), full batch, for `steps`
    steps; static videos repeat each image `num_frames` times. Both networks run in eval mode
    (running statistics fixed), everything but gamma / beta stays frozen. Returns the L1 loss
    before each step.
    """
    video_mode, image_mode = video_encoder.training, image_encoder.training
    video_encoder.eval()
    image_encoder.eval()
    with torch.no_grad():
        static = images.unsqueeze(1).expand(-1, num_frames, -1, -1, -1)  # [N, T, H, W, 3]
        target = video_features(video_encoder, static)  # [N, C]

    affine = [
        param
        for layer in image_encoder.modules()
        if isinstance(layer, nn.BatchNorm2d) and layer.affine
        for param in (layer.weight, layer.bias)
    ]
    if not affine:
        raise ValueError("the image encoder has no batch norm with gamma / beta to fit")
    requires_grad = {param: param.requires_grad for param in image_encoder.parameters()}
    for param in image_encoder.parameters():
        param.requires_grad_(False)
    for param in affine:
        param.requires_grad_(True)

    optimizer = torch.optim.Adam(affine, lr=lr)
    losses = []
    try:
        for _ in range(steps):
            loss = (image_encoder(images) - target).abs().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    finally:
        for param, flag in requires_grad.items():
            param.requires_grad_(flag)
        video_encoder.train(video_mode)
        image_encoder.train(image_mode)
    return losses
