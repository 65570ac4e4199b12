"""Audio encoder f_fine^a as a 2-D ResNet over the log-mel image (`model.audio.backbone: resnet2d`).

torchvision's ResNet (`model.audio.arch`: resnet18 / resnet34 / resnet50) with a one-channel first
convolution reads the spectrogram `[n_mels, F]` as an image, as the "Spectrogram + ResNet" audio
encoders of MMV (ResNet-50 on log-mel) do. Its last feature map `[C, m, f]` is averaged over the
m frequency rows: the fine features H^a are the f time positions (total stride 32), masked like the
1-D ResNet's (`mmdist.models.audio`), with the same fixed log-mel standardisation.

Pretrained weights (`model.audio.weights`) use torchvision's key names; the classifier (`fc.*`) is
ignored. ImageNet weights have a 3-channel `conv1.weight`: sum it over its input channels into a
file first (the shape check names that key otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torchvision import models as tv_models

from mmdist.models.audio import standardise
from mmdist.config import number, one_of, positive_number
from mmdist.models.layers import downsample_mask

ARCHS = ("resnet18", "resnet34", "resnet50")
STRIDE = 32  # conv1, max-pool and layers 2-4 halve each axis ('same'-style padding: ceil)


class ResNet2dAudioEncoder(nn.Module):
    """log-mel `[B, n_mels, F]` + frame mask `[B, F]` -> H^a `[B, f, C]` and its mask `[B, f]`, f = ceil(F / 32)."""

    IGNORED_WEIGHT_PREFIXES = ("fc.",)

    def __init__(self, arch: str, mean: float, std: float, pool: str):
        super().__init__()
        self.mean, self.std = mean, std
        net = getattr(tv_models, arch)(weights=None)
        net.conv1 = nn.Conv2d(1, net.conv1.out_channels, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's own init
        self.out_channels = net.fc.in_features
        del net.avgpool, net.fc  # a feature extractor: no pooling or classes
        self.backbone = net
        self.pool = pool
        self.stride = STRIDE

    def forward(self, mel: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.backbone
        x = standardise(mel.float(), frame_mask, self.mean, self.std)  # as the 1-D ResNet: padded frames -> 0
        x = x.to(net.conv1.weight.dtype).unsqueeze(1)  # [B, 1, n_mels, F]
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        x = net.layer4(net.layer3(net.layer2(net.layer1(x))))  # [B, C, m, f]
        features = x.mean(dim=2)  # [B, C, f]: frequency rows averaged
        mask = downsample_mask(frame_mask, self.stride, features.shape[-1])  # [B, f]
        return features.transpose(1, 2), mask  # [B, f, C], [B, f]

    def pretrained_module(self) -> nn.Module:
        return self.backbone


def build_resnet2d_audio_encoder(cfg: Mapping, path: str = "model.audio") -> ResNet2dAudioEncoder:
    return ResNet2dAudioEncoder(
        arch=one_of(cfg["arch"], ARCHS, f"{path}.arch"),
        mean=number(cfg["mean"], f"{path}.mean"),
        std=positive_number(cfg["std"], f"{path}.std"),
        pool=one_of(cfg["pool"], ("mean", "max"), f"{path}.pool"),
    )
