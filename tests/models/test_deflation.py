"""MMV Sec. 3.2 deflation: video network -> image network, then the gamma / beta fit."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mmdist.models import deflate_video_encoder, fit_deflation, video_features
from mmdist.models.deflation import _deflate_conv
from mmdist.models.video import build_video_encoder

FRAMES = 8


def _images(count: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Smooth images (low-frequency colour fields) so the features are not pure noise.
    coarse = torch.randint(0, 256, (count, 4, 4, 3), generator=g, dtype=torch.uint8).float()
    smooth = nn.functional.interpolate(coarse.permute(0, 3, 1, 2), size=(32, 32), mode="bilinear")
    return smooth.permute(0, 2, 3, 1).round().to(torch.uint8)  # [N, 32, 32, 3]


def _static(images: torch.Tensor) -> torch.Tensor:
    return images.unsqueeze(1).expand(-1, FRAMES, -1, -1, -1)  # [N, T, H, W, 3]


def _encoder(tiny_cfg: dict, temporal_kernel: int):
    cfg = copy.deepcopy(tiny_cfg["video"])
    cfg.update(stem_channels=8, channels=[16], blocks=[1], spatial_strides=[2], temporal_strides=[2])
    cfg.update(stem_temporal_kernel=temporal_kernel, temporal_kernel=temporal_kernel)
    torch.manual_seed(0)
    encoder = build_video_encoder(cfg)
    with torch.no_grad():  # realistic running statistics: a few training-mode passes on static videos
        for seed in range(3):
            encoder(_static(_images(8, seed=100 + seed)))
    return encoder.eval()


def test_deflated_conv_equals_the_3d_conv_on_a_static_video_away_from_the_time_boundary():
    torch.manual_seed(0)
    conv = nn.Conv3d(3, 5, kernel_size=3, padding=1)
    image = torch.randn(2, 3, 9, 9)
    static = image.unsqueeze(2).expand(-1, -1, 6, -1, -1)  # [B, C, T, H, W]
    video_out = conv(static)  # [B, 5, 6, 9, 9]
    image_out = _deflate_conv(conv)(image)  # [B, 5, 9, 9]
    for t in range(1, 5):  # interior frames see the image in all three taps
        assert torch.allclose(video_out[:, :, t], image_out, atol=1e-5)
    # The first frame's earliest tap reads zero padding: the boundary effect the fit corrects.
    without_first_tap = image_out - nn.functional.conv2d(image, conv.weight[:, :, 0], padding=1)
    assert torch.allclose(video_out[:, :, 0], without_first_tap, atol=1e-5)
    assert not torch.allclose(video_out[:, :, 0], image_out, atol=1e-3)


def test_deflation_is_exact_without_temporal_padding(tiny_cfg):
    encoder = _encoder(tiny_cfg, temporal_kernel=1)
    images = _images(4, seed=1)
    image_encoder = deflate_video_encoder(encoder).eval()
    with torch.no_grad():
        expected = video_features(encoder, _static(images))
        assert torch.allclose(image_encoder(images), expected, atol=1e-4)
    assert not any(isinstance(m, (nn.Conv3d, nn.BatchNorm3d)) for m in image_encoder.modules())


def test_fit_deflation_reduces_the_gap_and_touches_only_gamma_beta(tiny_cfg):
    encoder = _encoder(tiny_cfg, temporal_kernel=3)
    image_encoder = deflate_video_encoder(encoder)
    train, held_out = _images(16, seed=2), _images(8, seed=3)

    def gap(images):
        with torch.no_grad():
            return float((image_encoder.eval()(images) - video_features(encoder, _static(images))).abs().mean())

    before = {name: value.clone() for name, value in image_encoder.state_dict().items()}
    naive_gap = gap(held_out)
    assert naive_gap > 1e-3  # zero padding in time: naive deflation is not exact (MMV Table 3 'n-def')
    losses = fit_deflation(encoder, image_encoder, train, steps=25, lr=1e-2, num_frames=FRAMES)
    assert len(losses) == 25 and losses[-1] < 0.6 * losses[0]
    assert gap(held_out) < 0.6 * naive_gap  # generalises to images it was not fitted on

    after = image_encoder.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.endswith(("weight", "bias")) for name in changed)
    norms = {f"{name}.{p}" for name, m in image_encoder.named_modules() if isinstance(m, nn.BatchNorm2d)
             for p in ("weight", "bias")}
    assert changed <= norms  # convolutions and running statistics untouched
    assert all(p.requires_grad for p in image_encoder.parameters())  # flags restored


def test_unknown_layers_are_refused(tiny_cfg):
    encoder = _encoder(tiny_cfg, temporal_kernel=3)
    encoder.backbone.append(nn.MaxPool3d(2))
    with pytest.raises(TypeError, match="MaxPool3d"):
        deflate_video_encoder(encoder)


def test_synchronised_batch_norms_deflate_too(tiny_cfg):
    """Training may swap BatchNorm3d for a synchronised subclass; deflation still yields BatchNorm2d."""
    encoder = _encoder(tiny_cfg, temporal_kernel=1)
    images = _images(2, seed=4)
    with torch.no_grad():
        expected = deflate_video_encoder(encoder).eval()(images)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(encoder)).eval()
    image_encoder = deflate_video_encoder(synced).eval()
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in image_encoder.modules())
    with torch.no_grad():
        assert torch.allclose(image_encoder(images), expected, atol=1e-6)
