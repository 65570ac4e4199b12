"""Gather a model's per-rank outputs (mmdist.contracts.ModelOutput) into the global batch, once per step
(SPEC Sec. 6, 8.7).

The losses then see the global batch B = world_size x b. Tensors that carry gradient go through
`mmdist.dist.gather_with_grad`, whose gradient scheme makes DeepSpeed's gradient averaging give the
single-process gradients of the concatenated batch; masks and targets go through `gather_no_grad`.
Scalars (the commitment loss, already a mean) stay local: DeepSpeed averages their gradients.
"""

from __future__ import annotations

import torch

from mmdist import dist

# Eval-only outputs: gathering them would cost communication and buy nothing for the loss.
LOCAL_ONLY_KEYS = frozenset({"code_indices", "code_mask"})


def gather_outputs(outputs):
    """Nested dict / tuple of `[b, ...]` tensors -> the same structure of `[W*b, ...]` tensors."""
    if isinstance(outputs, dict) and "code_features" in outputs:
        # the codebook is the same on every rank: gathered, it would be W stacked copies
        raise ValueError("gather_outputs: the model's code_features and codebook must become code_probs "
                         "first (mmdist.objectives.with_code_probs), on each rank before the gather")
    if isinstance(outputs, dict):
        return {key: value if key in LOCAL_ONLY_KEYS else gather_outputs(value) for key, value in outputs.items()}
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(gather_outputs(value) for value in outputs)
    if isinstance(outputs, torch.Tensor) and outputs.ndim > 0:
        if outputs.requires_grad:
            return dist.gather_with_grad(outputs)
        return dist.gather_no_grad(outputs)
    return outputs
