"""Masked pooling and mask downsampling against plain loops."""

from __future__ import annotations

import torch

from mmdist.models.layers import downsample_mask, masked_max, masked_mean


def _random(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(5, 7, 3, generator=g)
    mask = torch.rand(5, 7, generator=g) < 0.5
    mask[2] = False  # a row with nothing valid (absent clip)
    return features, mask


def test_masked_mean_and_max_match_loops():
    features, mask = _random(0)
    mean, peak = masked_mean(features, mask), masked_max(features, mask)
    for i in range(5):
        rows = [l for l in range(7) if mask[i, l]] or list(range(7))  # empty row: all positions
        expected_mean = sum(features[i, l] for l in rows) / len(rows)
        expected_max = torch.stack([features[i, l] for l in rows]).max(dim=0).values
        assert torch.allclose(mean[i], expected_mean, atol=1e-6)
        assert torch.equal(peak[i], expected_max)


def test_downsample_mask_marks_windows_with_any_valid_frame():
    lengths = [0, 1, 4, 5, 9, 10]
    mask = torch.arange(10).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)  # [6, 10]
    out = downsample_mask(mask, stride=4, length=3)
    for i, length in enumerate(lengths):
        expected = [any(4 * j + k < length for k in range(4)) for j in range(3)]
        assert out[i].tolist() == expected
