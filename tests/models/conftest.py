"""Shared helpers for the model tests: the presets as shipped and random batches in the pipeline's format."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"

# Small inputs keep the suite fast; the model reads only these sizes from the data config.
DATA_CFG = {
    "video": {"num_frames": 8, "size": 32},
    "audio": {"n_mels": 40, "max_seconds": 0.4},
    "text": {"tokenizer": "hashed", "vocab_size": 64, "max_tokens": 6, "max_candidates": 3},
}


def preset(name: str) -> dict:
    with open(CONFIGS / f"{name}.yaml") as handle:
        return yaml.safe_load(handle)


@pytest.fixture
def tiny_cfg() -> dict:
    """The tiny preset with one code per encoder position: the tests of the code outputs count
    positions by hand; the pooling to the codes' granularity is tested on its own (test_codes.py)."""
    cfg = preset("tiny")
    cfg["codebook"].update(video_grid=None, audio_positions_per_code=1)
    return cfg


@pytest.fixture
def data_cfg() -> dict:
    return copy.deepcopy(DATA_CFG)


def make_batch(
    size: int = 6,
    frames: int = 8,
    side: int = 32,
    n_mels: int = 40,
    mel_frames: int = 40,
    candidates: int = 3,
    tokens: int = 6,
    vocab_size: int = 64,
    seed: int = 0,
    all_present: bool = False,
) -> dict:
    """A batch as the data pipeline produces it: padded audio, padded narrations, missing modalities.

    Padded and absent entries hold zeros, as the pipeline writes them.
    """
    g = torch.Generator().manual_seed(seed)
    batch = {
        "video": torch.randint(0, 256, (size, frames, side, side, 3), dtype=torch.uint8, generator=g),
        "audio": torch.randn(size, n_mels, mel_frames, generator=g) - 5.0,
    }
    lengths = torch.randint(1, mel_frames + 1, (size,), generator=g)
    lengths[0] = mel_frames
    batch["audio_frame_mask"] = torch.arange(mel_frames).unsqueeze(0) < lengths.unsqueeze(1)  # [B, F]
    batch["audio"] = batch["audio"] * batch["audio_frame_mask"].unsqueeze(1)
    token_lengths = torch.randint(1, tokens + 1, (size, candidates), generator=g)
    token_mask = torch.arange(tokens).view(1, 1, -1) < token_lengths.unsqueeze(2)  # [B, P, L]
    candidate_mask = torch.rand(size, candidates, generator=g) < 0.6
    candidate_mask[:, 0] = True
    token_mask &= candidate_mask.unsqueeze(2)
    ids = torch.randint(2, vocab_size, (size, candidates, tokens), generator=g)
    batch["text_tokens"] = ids * token_mask
    batch["text_token_mask"] = token_mask
    batch["text_candidate_mask"] = candidate_mask
    for index, modality in enumerate(("video", "audio", "text")):
        present = torch.ones(size, dtype=torch.bool)
        if not all_present:
            present[(index + 1) % size] = False  # a different absent clip per modality
        batch[f"has_{modality}"] = present
    batch["video"][~batch["has_video"]] = 0
    batch["audio"][~batch["has_audio"]] = 0
    batch["audio_frame_mask"][~batch["has_audio"]] = False
    for key in ("text_tokens", "text_token_mask", "text_candidate_mask"):
        batch[key][~batch["has_text"]] = 0
    return batch


@pytest.fixture
def batch_factory():
    """`make_batch` as a fixture (test modules cannot import conftest by name: other folders have one)."""
    return make_batch


@pytest.fixture
def load_preset():
    return preset
