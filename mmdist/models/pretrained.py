"""Pretrained backbone weights: `model.<modality>.weights` (null by default), read when training starts.

A weights file holds the state dict of one encoder's pretrained part (`encoder.pretrained_module()`:
the torchvision network, the open_clip text tower, or the whole in-house encoder), with that
module's own key names, e.g. the `state_dict()` of `torchvision.models.video.r2plus1d_18(weights=...)`
or the text keys of an open_clip CLIP checkpoint. Formats: safetensors (a `.safetensors` file) or
anything else read by `torch.load(weights_only=True)` (tensors and plain containers only: a pickle
can run code as it loads). Where: a local path, `file://` or `s3://` (mmdist.data.storage,
`storage.endpoint_url`).

Loading is strict: every key of the module must be in the file with its shape, and the file holds
nothing else, except keys under `encoder.IGNORED_WEIGHT_PREFIXES` (the parts the encoder drops: a
classifier head, a CLIP checkpoint's image tower). A mismatch is an error naming the key and the file.

Only training reads these files (`mmdist.train.loop.setup_engine`, before any warm start from
`model.init_checkpoint`): a trained checkpoint or export holds every weight, so evaluation,
export and inference never need them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping

import torch
from torch import nn

from mmdist.models.checkpoint import load_weights_only
from mmdist.models.warm_start import load_state_dict_exactly


class PretrainedWeightsError(ValueError):
    """A weights file is unreadable, is not a flat name -> tensor mapping, or does not fit the encoder."""


def read_weights(url: str, endpoint_url: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict in the file at `url` (path, file://, s3://): safetensors or torch.load, weights only."""
    from mmdist.data.storage import is_remote, read_bytes

    local = url.removeprefix("file://")
    folder = None
    if is_remote(url):  # object storage: fetched whole through the storage layer
        folder = tempfile.mkdtemp(prefix="mmdist-weights-")
        local = os.path.join(folder, os.path.basename(url.rstrip("/")) or "weights")
        with open(local, "wb") as handle:
            handle.write(read_bytes(url, endpoint_url))
    try:
        if not os.path.isfile(local):
            raise PretrainedWeightsError(f"no weights file at {url}")
        if local.endswith(".safetensors"):
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                state = load_file(local)
            except SafetensorError as err:
                raise PretrainedWeightsError(f"{url} is not a readable safetensors file: {err}") from None
        else:
            try:
                state = load_weights_only(local)
            except (RuntimeError, EOFError, OSError) as err:  # not a torch.save file (UnsafeCheckpointError passes)
                raise PretrainedWeightsError(f"{url} is not a safetensors or torch.save file: {err}") from None
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    if not isinstance(state, Mapping):
        raise PretrainedWeightsError(f"{url} holds a {type(state).__name__}, not a state dict (name -> tensor)")
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise PretrainedWeightsError(
                f"{url}: entry {name!r} is a {type(value).__name__}, not a tensor (save module.state_dict() itself, "
                "not a training checkpoint that wraps it)"
            )
    return dict(state)


def load_encoder_weights(encoder: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> list[str]:
    """Copy `state` into `encoder.pretrained_module()`, strictly (see the module docstring).
    Returns the file's keys that were ignored (under `encoder.IGNORED_WEIGHT_PREFIXES`)."""
    prefixes = tuple(encoder.IGNORED_WEIGHT_PREFIXES)
    ignored = sorted(name for name in state if prefixes and name.startswith(prefixes))
    kept = {name: value for name, value in state.items() if name not in set(ignored)}
    try:
        load_state_dict_exactly(encoder.pretrained_module(), kept, source)
    except ValueError as err:
        raise PretrainedWeightsError(str(err)) from None
    return ignored


def load_pretrained(model: nn.Module, model_cfg: Mapping, endpoint_url: str | None = None) -> list[str]:
    """Load `model.<m>.weights` into each encoder of `model` that names a file; one report line each."""
    lines = []
    for modality, encoder in model.encoders.items():
        url = model_cfg[modality]["weights"]
        if url is None:
            continue
        if not isinstance(url, str) or not url:
            raise PretrainedWeightsError(f"model.{modality}.weights must be null or a path / URL, got {url!r}")
        source = f"model.{modality}.weights={url}"
        ignored = load_encoder_weights(encoder, read_weights(url, endpoint_url), source)
        lines.append(f"[weights] {source}: {len(encoder.pretrained_module().state_dict())} tensors loaded"
                     + (f", {len(ignored)} ignored ({', '.join(encoder.IGNORED_WEIGHT_PREFIXES)})" if ignored else ""))
    return lines
