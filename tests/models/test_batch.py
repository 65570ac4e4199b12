"""to_clip_batch (Ray Data's columns -> the model's ClipBatch) and check_batch's shape rule: each
column is [B, *dims] of mmdist.contracts.BATCH_COLUMNS, a dim named twice the same size."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from mmdist.contracts import BATCH_COLUMNS
from mmdist.models.batch import BatchError, check_batch, to_clip_batch


def test_numpy_columns_become_writable_tensors_and_metadata_stays_behind(batch_factory):
    batch = batch_factory(size=3)
    columns = {name: value.numpy() for name, value in batch.items()}
    columns["video"].flags.writeable = False  # Arrow's views are read-only
    columns["clip_id"] = np.array(["a", "b", "c"], dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns on a read-only array
        clip_batch = to_clip_batch(columns, device="cpu")
    assert list(clip_batch) == list(BATCH_COLUMNS)
    for name, value in clip_batch.items():
        assert isinstance(value, torch.Tensor) and torch.equal(value, batch[name]), name
    clip_batch["video"][0] = 1  # a copy, not Arrow's buffer
    assert (columns["video"][0] == batch["video"][0].numpy()).all()


def test_tensors_pass_through_and_a_missing_column_is_named(batch_factory):
    batch = batch_factory(size=2)
    del batch["audio_frame_mask"]
    clip_batch = to_clip_batch(batch)
    assert clip_batch["video"] is batch["video"] and "audio_frame_mask" not in clip_batch
    with pytest.raises(BatchError, match="batch is missing 'audio_frame_mask', needed by modality 'audio'"):
        check_batch(clip_batch, ["video", "audio"], n_mels=40, vocab_size=64)
    assert check_batch(clip_batch, ["video", "text"], n_mels=40, vocab_size=64) == 2  # audio is not read


def test_a_dim_named_twice_must_agree(batch_factory):
    batch = batch_factory(size=2)
    assert check_batch(batch, ["video", "audio", "text"], n_mels=40, vocab_size=64) == 2
    cases = {
        "audio_frame_mask": (batch["audio_frame_mask"][:, :-1], r"batch\['audio_frame_mask'\] must have shape \[2, 40\]"),
        "text_token_mask": (batch["text_token_mask"][:, :, :-1], r"batch\['text_token_mask'\] must have shape \[2, 3, 6\]"),
        "text_candidate_mask": (batch["text_candidate_mask"][:, :2], r"shape \[2, 3\]"),
        "has_text": (batch["has_text"][:1], r"batch\['has_text'\] must have shape \[2\]"),
        "video": (batch["video"][..., :2], r"batch\['video'\] must have shape \[2, \?, \?, \?, 3\]"),
    }
    for name, (value, message) in cases.items():
        with pytest.raises(BatchError, match=message):
            check_batch({**batch, name: value}, ["video", "audio", "text"], n_mels=40, vocab_size=64)
