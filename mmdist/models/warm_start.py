"""Warm start from an earlier run (CMCM Sec. 4.1, Table 3 row g: warm-starting the encoders matters).

Only entries whose names and shapes match are loaded; everything else keeps its fresh
initialisation and is reported, so that a changed head or codebook size never blocks reuse
of the encoders and never passes silently.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def load_matching_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Copy the entries of `state_dict` whose name and shape match `model`'s (parameters and buffers).

    Values are cast to the model's dtype. Returns
    `{"loaded": [names], "skipped": {name: reason}, "missing": [model names not in state_dict]}`.
    The caller (the trainer) unwraps DeepSpeed / DDP checkpoints first: names are the model's own.
    """
    own = model.state_dict()
    matching: dict[str, torch.Tensor] = {}
    skipped: dict[str, str] = {}
    for name, value in state_dict.items():
        if name not in own:
            skipped[name] = "not in model"
        elif not isinstance(value, torch.Tensor):
            skipped[name] = f"not a tensor ({type(value).__name__})"
        elif value.shape != own[name].shape:
            skipped[name] = f"shape {list(value.shape)} in checkpoint, {list(own[name].shape)} in model"
        else:
            matching[name] = value
    # strict=False: the entries left out keep their initial values; they are reported below.
    model.load_state_dict(matching, strict=False)
    return {
        "loaded": sorted(matching),
        "skipped": dict(sorted(skipped.items())),
        "missing": sorted(name for name in own if name not in state_dict),
    }
