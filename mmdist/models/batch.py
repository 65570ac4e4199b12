"""The batch the model reads (mmdist.contracts.ClipBatch): made from Ray Data's columns, and checked
with errors that name the key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from mmdist.contracts import BATCH_COLUMNS, ClipBatch, columns_of


class BatchError(ValueError):
    """A batch lacks a key the model needs, or a tensor has the wrong dtype or shape."""


def to_clip_batch(columns: Mapping, device: torch.device | str | None = None) -> ClipBatch:
    """Ray Data's batch -> the model's: the ClipBatch columns as torch tensors (on `device` when given).

    `columns`: numpy arrays (`iter_batches`, a map_batches call) or tensors (`iter_torch_batches`).
    Other columns (clip ids, labels) stay behind; a missing one stays missing, for `check_batch` to name.
    """
    batch = {}
    for name in BATCH_COLUMNS:
        if name not in columns:
            continue
        value = columns[name]
        if not isinstance(value, torch.Tensor):
            # Arrow hands out read-only views: torch warns on those (once per process), so they are copied
            value = torch.from_numpy(np.require(value, requirements=["C", "W"]))
        batch[name] = value if device is None else value.to(device)
    return batch


def _expect(batch: Mapping, key: str, sizes: dict) -> torch.Tensor:
    """batch[key] is a tensor of the column's dtype and shape [B, *dims]; a dim seen first here is bound in `sizes`."""
    tensor, column = batch[key], BATCH_COLUMNS[key]
    if not isinstance(tensor, torch.Tensor):
        raise BatchError(f"batch[{key!r}] must be a torch.Tensor, got {type(tensor).__name__}")
    if key == "audio":  # any float: autocast or a caller's half precision is fine
        if not tensor.is_floating_point():
            raise BatchError(f"batch['audio'] must be a float log-mel spectrogram, got {tensor.dtype}")
    elif tensor.dtype != getattr(torch, column.dtype):
        raise BatchError(f"batch[{key!r}] must be {getattr(torch, column.dtype)}, got {tensor.dtype}")
    dims = ("B", *column.dims)
    wanted = [dim if isinstance(dim, int) else sizes.get(dim) for dim in dims]
    if tensor.dim() != len(dims) or any(want is not None and got != want for got, want in zip(tensor.shape, wanted)):
        shown = ", ".join("?" if want is None else str(want) for want in wanted)
        raise BatchError(f"batch[{key!r}] must have shape [{shown}], got {list(tensor.shape)}")
    sizes.update((dim, got) for dim, got in zip(dims, tensor.shape) if isinstance(dim, str))
    return tensor


def check_batch(batch: Mapping, modalities: Sequence[str], n_mels: int, vocab_size: int) -> int:
    """Validate the keys the model's modalities read (mmdist.contracts.BATCH_COLUMNS); return the batch size B."""
    for modality in modalities:
        for key in columns_of(modality):
            if key not in batch:
                raise BatchError(f"batch is missing {key!r}, needed by modality {modality!r}")
    first = columns_of(modalities[0])[0]
    size = batch[first].shape[0] if isinstance(batch[first], torch.Tensor) and batch[first].dim() else None
    if size is None:
        raise BatchError(f"batch[{first!r}] must be a batched tensor")
    sizes = {"B": size, "n_mels": n_mels}  # the other sizes: as the first column with them says
    for key in BATCH_COLUMNS:
        if BATCH_COLUMNS[key].modality in modalities:
            _expect(batch, key, sizes)
    if "text" in modalities:
        tokens, token_mask = batch["text_tokens"], batch["text_token_mask"]
        real = tokens[token_mask]
        if real.numel() and (int(real.min()) < 0 or int(real.max()) >= vocab_size):
            raise BatchError(
                f"batch['text_tokens'] holds ids in [{int(real.min())}, {int(real.max())}] "
                f"outside the vocabulary [0, {vocab_size}) (data.text.vocab_size)"
            )
    return size
