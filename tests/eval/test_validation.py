"""validation_metrics: the flat `val_` dict the training loop reports."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mmdist.eval import retrieval_metrics, validation_metrics


def test_aligned_embeddings_score_perfectly_and_keys_are_flat():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 16))
    sounding = base[:, 0] > 0
    audio = base.copy()
    audio[~sounding] = rng.normal(size=((~sounding).sum(), 16))  # silent clips: audio unrelated to video
    rows = {
        "emb_video": base.astype(np.float32),
        "emb_audio": audio.astype(np.float32),
        "present_video": np.ones(40, dtype=bool),
        "present_audio": np.ones(40, dtype=bool),
    }
    labels = {"label_sounding": np.array(sounding.tolist(), dtype=object), "label_action": np.array(["x"] * 40, dtype=object)}
    out = validation_metrics(rows, labels)
    assert set(out) == {
        "val_clips", "val_r1_video_audio", "val_r5_video_audio", "val_r1_audio_video", "val_r5_audio_video",
        "val_mean_r1", "val_mean_r5", "val_discovery_roc_auc",
    }
    assert all(isinstance(value, float) for value in out.values())
    assert out["val_discovery_roc_auc"] == 1.0  # identical vectors (cosine 1) for every sounding clip
    assert out["val_mean_r5"] == pytest.approx((out["val_r5_video_audio"] + out["val_r5_audio_video"]) / 2)


def test_matches_retrieval_metrics_on_present_clips_and_is_fast():
    rng = np.random.default_rng(1)
    n = 400
    rows = {f"emb_{m}": rng.normal(size=(n, 128)).astype(np.float32) for m in ("video", "audio", "text")}
    rows.update({f"present_{m}": rng.random(n) > 0.1 for m in ("video", "audio", "text")})
    labels = {"label_sounding": np.array([bool(x < 0.45) if x < 0.9 else None for x in rng.random(n)], dtype=object)}
    start = time.perf_counter()
    out = validation_metrics(rows, labels)
    assert time.perf_counter() - start < 1.0
    keep = rows["present_text"] & rows["present_audio"]
    t = rows["emb_text"][keep] / np.linalg.norm(rows["emb_text"][keep], axis=1, keepdims=True)
    a = rows["emb_audio"][keep] / np.linalg.norm(rows["emb_audio"][keep], axis=1, keepdims=True)
    assert out["val_r5_text_audio"] == pytest.approx(retrieval_metrics(t @ a.T)["R@5"])
    assert len([key for key in out if key.startswith("val_r5_")]) == 6
    assert 0.3 < out["val_discovery_roc_auc"] < 0.7 and "val_discovery_roc_auc_audio_text" in out
