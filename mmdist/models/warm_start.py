"""Loading saved weights into a model: the matching subset (warm start) or exactly (inference).

Warm start from an earlier run (CMCM Sec. 4.1, Table 3 row g: warm-starting the encoders matters):
only entries whose names and shapes match are loaded; everything else keeps its fresh
initialisation and is reported, so that a changed head or codebook size never blocks reuse
of the encoders and never passes silently.

Inference (export, `mmdist.load_model`) needs every tensor, by name: a missing buffer (a codebook
statistic added after the checkpoint was written) would otherwise keep its initial value unnoticed.
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


def load_state_dict_exactly(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Every parameter and buffer of `model` from `state_dict`, by name and shape, nothing left over.

    A mismatch raises ValueError naming `source` (the checkpoint or export) and the entries."""
    own = model.state_dict()
    problems = [f"missing {name}" for name in own if name not in state_dict]
    problems += [f"unexpected {name}" for name in state_dict if name not in own]
    problems += [
        f"{name}: shape {list(state_dict[name].shape)} in {source}, {list(own[name].shape)} in the model"
        for name in own if name in state_dict and state_dict[name].shape != own[name].shape
    ]
    if problems:
        raise ValueError(f"{source} does not hold this model's weights ({len(problems)} problems): {'; '.join(problems[:10])}")
    model.load_state_dict(state_dict, strict=True)
