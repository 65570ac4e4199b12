"""Video encoders from `torchvision.models.video`, built without weights (`model.video.backbone: torchvision`).

`model.video.arch` names the network: `r2plus1d_18` (MMV Sec. 4.3's R(2+1)D-18), `r3d_18`, `mc3_18`,
`s3d`, `mvit_v1_b`, `mvit_v2_s`. The classifier is dropped; the fine features H^v are the positions
of the last feature map, `[B, t*h*w, C]`, as the in-house encoder's (`mmdist.models.video`).
Pretrained Kinetics weights come from a file (`model.video.weights`, mmdist.models.pretrained) with
torchvision's key names; its classifier keys are ignored. Nothing is downloaded.

Input: uint8 `[B, T, H, W, 3]` -> [0, 1] -> standardised with `model.video.mean` / `std` (torchvision's
Kinetics values: 0.43216, 0.394666, 0.37645 / 0.22803, 0.22145, 0.216989 for the ResNets and S3D; 0.45 /
0.225 for MViT) -> `[B, 3, T, H, W]`.

MViT's positional embeddings and pooling are laid out for 16 frames of 224 x 224 (torchvision's
builders fix that size), so with MViT data.video.num_frames must be 16 and data.video.size 224.
MViT's features are its final LayerNorm's output, so they can be negative, unlike the ResNets' and
S3D's (post-ReLU): MCN's reconstruction decoders end in a ReLU.

The position grid (t, h, w) is not always ceil(input / stride): S3D's last max-pool floors. It is
measured by running the same network built on the meta device (shapes only: no memory, no compute).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torchvision.models import video as tv_video

from mmdist.config import ConfigError, one_of
from mmdist.models.video import rgb_mean_std

RESNETS = ("r2plus1d_18", "r3d_18", "mc3_18")
MVITS = ("mvit_v1_b", "mvit_v2_s")
ARCHS = (*RESNETS, "s3d", *MVITS)
# Total (temporal, spatial) stride of each network, for model.py's check that the input reaches it.
STRIDES = {"r2plus1d_18": (8, 16), "r3d_18": (8, 16), "mc3_18": (1, 16), "s3d": (8, 32), "mvit_v1_b": (2, 32),
           "mvit_v2_s": (2, 32)}
MVIT_INPUT = (16, 224)  # frames, side: the input torchvision's MViT builders lay the network out for
# The parts a feature extractor drops (pooling, classifier); a weights file's keys under them are ignored.
CLASSIFIER = {"s3d": ("avgpool", "classifier"), **{arch: ("head",) for arch in MVITS},
              **{arch: ("avgpool", "fc") for arch in RESNETS}}


def feature_map(net: nn.Module, arch: str, x: torch.Tensor) -> torch.Tensor:
    """torchvision network `net` of `arch` on normalised `[B, 3, T, H, W]` -> last feature map `[B, C, t, h, w]`."""
    if arch in RESNETS:
        return net.layer4(net.layer3(net.layer2(net.layer1(net.stem(x)))))
    if arch == "s3d":
        return net.features(x)
    # MViT: torchvision's MViT.forward up to its final norm, without the class token
    x = net.pos_encoding(net.conv_proj(x).flatten(2).transpose(1, 2))  # [B, 1 + t*h*w, C0]
    thw = (net.pos_encoding.temporal_size, *net.pos_encoding.spatial_size)
    for block in net.blocks:
        x, thw = block(x, thw)
    tokens = net.norm(x)[:, 1:]  # [B, t*h*w, C]
    return tokens.transpose(1, 2).unflatten(2, thw)  # [B, C, t, h, w]


def check_mvit_input(arch: str, num_frames: int, size: int) -> None:
    if arch in MVITS and (num_frames, size) != MVIT_INPUT:
        raise ConfigError(
            f"model.video.arch = {arch} takes {MVIT_INPUT[0]} frames of {MVIT_INPUT[1]} x {MVIT_INPUT[1]} "
            f"pixels (torchvision's positional layout): set data.video.num_frames={MVIT_INPUT[0]} and "
            f"data.video.size={MVIT_INPUT[1]}, got {num_frames} frames of {size}"
        )


class TorchvisionVideoEncoder(nn.Module):
    """uint8 video `[B, T, H, W, 3]` -> fine features H^v `[B, t*h*w, C]` (all positions valid)."""

    def __init__(self, arch: str, mean, std, pool: str):
        super().__init__()
        self.arch = arch
        # Not persistent: they come from the config, checkpoints hold only learned state.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1, 1), persistent=False)
        self.backbone = self._network()
        self.IGNORED_WEIGHT_PREFIXES = tuple(f"{name}." for name in CLASSIFIER[arch])
        self.pool = pool
        self.temporal_stride, self.spatial_stride = STRIDES[arch]
        self.out_channels = self._probe(STRIDES[arch][0] * 2, 224 if arch in MVITS else STRIDES[arch][1] * 2)[0]

    def _network(self) -> nn.Module:
        net = getattr(tv_video, self.arch)(weights=None)
        for name in CLASSIFIER[self.arch]:
            delattr(net, name)
        return net

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = video.permute(0, 4, 1, 2, 3).to(self.mean.dtype) / 255.0  # [B, 3, T, H, W]
        x = ((x - self.mean) / self.std).to(next(self.backbone.parameters()).dtype)
        return feature_map(self.backbone, self.arch, x).flatten(2).transpose(1, 2)  # [B, t*h*w, C]

    def _probe(self, num_frames: int, size: int) -> tuple[int, int, int, int]:
        """(C, t, h, w) of the feature map for `num_frames` frames of `size`^2 pixels, from the same
        network built on the meta device."""
        if self.arch in MVITS:
            num_frames, size = MVIT_INPUT
        with torch.device("meta"):
            net = self._network().eval()  # eval: a 1-clip batch norm would refuse training mode
            return tuple(feature_map(net, self.arch, torch.empty(1, 3, num_frames, size, size)).shape[1:])

    def grid(self, num_frames: int, size: int) -> tuple[int, int, int]:
        """(t, h, w) positions of the last feature map for `num_frames` frames of `size`^2 pixels."""
        check_mvit_input(self.arch, num_frames, size)
        try:
            return self._probe(num_frames, size)[1:]
        except (RuntimeError, ValueError) as err:  # a feature map shrank to nothing
            raise ConfigError(
                f"model.video.arch = {self.arch} cannot take data.video.num_frames={num_frames} frames of "
                f"data.video.size={size} pixels: {str(err).splitlines()[0]}"
            ) from None

    def pretrained_module(self) -> nn.Module:
        return self.backbone


def build_torchvision_video_encoder(
    cfg: Mapping, num_frames: int, size: int, path: str = "model.video"
) -> TorchvisionVideoEncoder:
    """Build the encoder of `model.video` (backbone: torchvision) for `num_frames` frames of `size` pixels."""
    arch = one_of(cfg["arch"], ARCHS, f"{path}.arch")
    mean, std = rgb_mean_std(cfg, path)
    check_mvit_input(arch, num_frames, size)
    encoder = TorchvisionVideoEncoder(arch, mean, std, one_of(cfg["pool"], ("mean", "max"), f"{path}.pool"))
    encoder.grid(num_frames, size)  # an input too small for the network fails here, naming the data keys
    return encoder
