"""Batch norm over the global batch on any device (torch's SyncBatchNorm runs on GPUs only).

Every loss here is computed on the global batch (SPEC Sec. 6), so that 2 workers x b clips train
exactly like 1 worker x 2b clips. Batch norm layers break that unless their statistics come from the
global batch too. The sums go through `mmdist.dist.all_reduce_sum_with_grad`, whose backward
all-reduces the gradients: the same sum-backward convention as the embedding gather, so the gradients
after DeepSpeed's averaging equal the single-process ones (tests/train/test_sync_batchnorm.py).
"""

from __future__ import annotations

import torch
from torch import nn

from mmdist import dist


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Drop-in for BatchNorm1d/2d/3d whose training statistics span all data-parallel ranks."""

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.world_size() > 1):
            return super().forward(input)
        channels = input.shape[1]
        reduce_dims = [dim for dim in range(input.dim()) if dim != 1]
        local_count = input.numel() // channels
        stats = torch.cat(
            [
                input.sum(dim=reduce_dims),  # [C]
                (input * input).sum(dim=reduce_dims),  # [C]
                input.new_full((1,), float(local_count)),
            ]
        )
        stats = dist.all_reduce_sum_with_grad(stats)  # [2C + 1], summed over ranks
        # clamp: a modality absent from the whole global batch normalises nothing, and must not give NaN
        total, total_sq, count = stats[:channels], stats[channels : 2 * channels], stats[-1].clamp_min(1.0)
        mean = total / count
        var = (total_sq / count - mean * mean).clamp_min(0.0)  # biased, as batch norm normalises with it
        if self.track_running_stats and stats[-1] > 0:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * count / (count - 1).clamp_min(1.0)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach().to(self.running_mean.dtype))
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach().to(self.running_var.dtype))
        shape = [1, channels] + [1] * (input.dim() - 2)
        output = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        return output


def convert_to_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm*d in `module` by a GlobalBatchNorm holding the same parameters and stats."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        converted = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        if module.track_running_stats:
            converted.running_mean, converted.running_var = module.running_mean, module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        replacement = convert_to_global_batchnorm(child)
        if replacement is not child:
            setattr(module, name, replacement)
    return module
