"""Checks on the batch the data pipeline hands to the model, with errors that name the key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

KEYS_BY_MODALITY = {
    "video": ("video", "has_video"),
    "audio": ("audio", "audio_frame_mask", "has_audio"),
    "text": ("text_tokens", "text_token_mask", "text_candidate_mask", "has_text"),
}


class BatchError(ValueError):
    """A batch lacks a key the model needs, or a tensor has the wrong dtype or shape."""


def _expect(batch: Mapping, key: str, dtype: torch.dtype | None, shape: Sequence[int | None]) -> torch.Tensor:
    tensor = batch[key]
    if not isinstance(tensor, torch.Tensor):
        raise BatchError(f"batch[{key!r}] must be a torch.Tensor, got {type(tensor).__name__}")
    if dtype is not None and tensor.dtype != dtype:
        raise BatchError(f"batch[{key!r}] must be {dtype}, got {tensor.dtype}")
    if tensor.dim() != len(shape) or any(want is not None and got != want for got, want in zip(tensor.shape, shape)):
        wanted = ", ".join("?" if want is None else str(want) for want in shape)
        raise BatchError(f"batch[{key!r}] must have shape [{wanted}], got {list(tensor.shape)}")
    return tensor


def check_batch(batch: Mapping, modalities: Sequence[str], n_mels: int, vocab_size: int) -> int:
    """Validate the keys the model's modalities read; return the batch size B."""
    for modality in modalities:
        for key in KEYS_BY_MODALITY[modality]:
            if key not in batch:
                raise BatchError(f"batch is missing {key!r}, needed by modality {modality!r}")
    first = KEYS_BY_MODALITY[modalities[0]][0]
    size = batch[first].shape[0] if isinstance(batch[first], torch.Tensor) and batch[first].dim() else None
    if size is None:
        raise BatchError(f"batch[{first!r}] must be a batched tensor")
    for modality in modalities:
        _expect(batch, f"has_{modality}", torch.bool, [size])
    if "video" in modalities:
        _expect(batch, "video", torch.uint8, [size, None, None, None, 3])
    if "audio" in modalities:
        audio = _expect(batch, "audio", None, [size, n_mels, None])
        if not audio.is_floating_point():
            raise BatchError(f"batch['audio'] must be a float log-mel spectrogram, got {audio.dtype}")
        _expect(batch, "audio_frame_mask", torch.bool, [size, audio.shape[2]])
    if "text" in modalities:
        tokens = _expect(batch, "text_tokens", torch.int64, [size, None, None])
        token_mask = _expect(batch, "text_token_mask", torch.bool, list(tokens.shape))
        _expect(batch, "text_candidate_mask", torch.bool, list(tokens.shape[:2]))
        real = tokens[token_mask]
        if real.numel() and (int(real.min()) < 0 or int(real.max()) >= vocab_size):
            raise BatchError(
                f"batch['text_tokens'] holds ids in [{int(real.min())}, {int(real.max())}] "
                f"outside the vocabulary [0, {vocab_size}) (data.text.vocab_size)"
            )
    return size
