"""The training loop's in-batch R@1: evaluation's rank rule, and each pair in the space evaluation uses."""

from __future__ import annotations

import copy
from itertools import combinations

import numpy as np
import pytest
import torch

from mmdist.models import build_model
from mmdist.train.metrics import in_batch_recall_at_1
from tests.models.conftest import DATA_CFG, make_batch, preset


def naive_recall_at_1(queries: np.ndarray, candidates: np.ndarray) -> float:
    """A query is a hit when no other candidate's cosine reaches its own candidate's (ties are misses)."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    c = candidates / np.linalg.norm(candidates, axis=1, keepdims=True)
    hits = []
    for i in range(len(q)):
        own = q[i] @ c[i]
        hits.append(all(q[i] @ c[j] < own for j in range(len(c)) if j != i))
    return float(np.mean(hits))


def test_matches_a_naive_loop_with_ties():
    rng = np.random.default_rng(0)
    video = rng.integers(0, 2, size=(12, 3)).astype(np.float32) + 0.01  # few directions: many exact ties
    audio = video.copy()
    audio[::3] = rng.normal(size=(4, 3))
    text = np.repeat(rng.normal(size=(12, 1, 3)), 2, axis=1).astype(np.float32)  # [B, P, D]: narration 0 is used
    text[:, 1] = 5.0  # other candidates must not matter
    embeddings = {"video": torch.tensor(video), "audio": torch.tensor(audio, dtype=torch.float32), "text": torch.tensor(text)}
    recalls = in_batch_recall_at_1({"embeddings": embeddings})
    flat = {"video": video, "audio": audio, "text": text[:, 0]}
    assert set(recalls) == {"r1_audio_text", "r1_audio_video", "r1_text_video"}
    for a, b in combinations(sorted(flat), 2):
        assert recalls[f"r1_{a}_{b}"] == pytest.approx(naive_recall_at_1(flat[a], flat[b]))
    assert 0 < recalls["r1_audio_video"] < 1  # ties among the identical rows make some queries miss
    constant = {m: torch.ones(5, 4) for m in ("video", "audio")}
    assert in_batch_recall_at_1({"embeddings": constant}) == {"r1_audio_video": 0.0}


def test_fac_model_compares_vision_and_audio_in_s_va():
    cfg = copy.deepcopy(preset("tiny"))
    cfg.update(head="fac")
    cfg["codebook"]["enabled"] = False
    torch.manual_seed(0)
    model = build_model(cfg, DATA_CFG)
    out = model(make_batch(size=6, all_present=True))
    fac = {name: value.detach() for name, value in out["fac"].items()}
    embeddings = {name: value.detach() for name, value in out["embeddings"].items()}
    recalls = in_batch_recall_at_1({"embeddings": embeddings, "fac": fac})
    assert recalls["r1_audio_video"] == pytest.approx(naive_recall_at_1(fac["audio_va"].numpy(), fac["video_va"].numpy()))
    assert recalls["r1_audio_text"] == pytest.approx(naive_recall_at_1(fac["audio_vat"].numpy(), fac["text_vat"][:, 0].numpy()))
    assert recalls["r1_text_video"] == pytest.approx(naive_recall_at_1(fac["text_vat"][:, 0].numpy(), fac["video_vat"].numpy()))
    # S_va aligned, S_vat not: only the video-audio figure is perfect
    aligned = dict(fac, audio_va=fac["video_va"] * 2.0)
    shuffled = {m: value[torch.randperm(6)] for m, value in embeddings.items()}
    recalls = in_batch_recall_at_1({"embeddings": shuffled, "fac": aligned})
    assert recalls["r1_audio_video"] == 1.0
    assert in_batch_recall_at_1({"embeddings": shuffled})["r1_audio_video"] < 1.0  # a joint model reads `embeddings`
