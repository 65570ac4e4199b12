"""compute_metrics and the report on hand-built rows with known structure (no model, no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from mmdist.eval.analysis import compute_metrics
from mmdist.eval.job import json_safe
from mmdist.eval.report import write_report

ACTIONS = [f"verb{v} noun{n}" for v in range(3) for n in range(2)]


def structured_rows(num_clips: int = 60, seed: int = 0) -> tuple[dict, dict]:
    """Every modality points along its clip's action direction; audio only when the action sounds.
    Codes: video/text codewords name the action, audio codewords only for sounding clips."""
    rng = np.random.default_rng(seed)
    action = rng.integers(0, len(ACTIONS), num_clips)
    sounding = rng.random(num_clips) < 0.5
    directions = np.eye(8)[: len(ACTIONS)]
    noise = lambda: rng.normal(scale=0.2, size=(num_clips, 8))  # noqa: E731
    audio = np.where(sounding[:, None], directions[action], rng.normal(size=(num_clips, 8))) + noise()
    codes_text = np.repeat(action[:, None], 4, axis=1)
    codes_text[:, 3] = -1  # padding
    rows = {
        "clip_id": np.array([f"c{i:03d}" for i in range(num_clips)], dtype=object),
        "source_id": np.array([f"s{i // 5}" for i in range(num_clips)], dtype=object),
        "label_action": np.array([ACTIONS[a] for a in action], dtype=object),
        "label_sounding": np.array(sounding.tolist(), dtype=object),
        "emb_video": (directions[action] + noise()).astype(np.float32),
        "emb_audio": audio.astype(np.float32),
        "emb_text": (directions[action] + noise()).astype(np.float32),
        **{f"present_{m}": np.ones(num_clips, dtype=bool) for m in ("video", "audio", "text")},
        "codes_video": np.repeat(action[:, None], 8, axis=1),
        "codes_audio": np.where(sounding[:, None], action[:, None] + 6, 15).repeat(5, axis=1),
        "codes_text": codes_text,
    }
    model_facts = {"num_codes": 16, "codebook": rng.normal(size=(16, 4)), "grids": {"video": (2, 2, 2), "audio": (5,), "text": (4,)}}
    return rows, model_facts


@pytest.fixture
def eval_cfg(job_cfg):
    cfg = job_cfg("evaluate", ("checkpoint=unused", "eval.report.map_method=pca"))["eval"]
    cfg["codebook"]["min_occurrence"] = 1
    return cfg


def test_sections_reflect_the_planted_structure(eval_cfg, tmp_path):
    rows, model_facts = structured_rows()
    metrics, artifacts = compute_metrics(rows, eval_cfg, model_facts)
    assert metrics["num_clips"] == 60
    # video and text share the action direction: same-action retrieval is nearly perfect, instance retrieval is not
    assert metrics["retrieval_action"]["video->text"]["R@1"] > 90
    assert metrics["retrieval"]["video->text"]["draws"] == 1
    assert metrics["discovery"]["audio-video"]["roc_auc"] > 0.9  # audio agrees with video only when sounding
    assert metrics["probe"]["text"]["top1"] > 90 and metrics["clustering"]["video"]["nmi"] > 90
    codebook = metrics["codebook"]
    assert codebook["label_purity_video"] == 100.0  # each video codeword names exactly one action
    assert codebook["active_codes"] == 6 + 6 + 1 and codebook["jointly_used"] == 6  # codes 0-5: video and text
    assert codebook["table"][0]["precision"] == 100.0 and codebook["table"][0]["text_precision"] == 100.0
    assert artifacts["heatmap"]["matrices"]["video"].shape == (6, 6)

    paths = write_report(json_safe({"checkpoint": "ckpt", "data_path": "data", **metrics}), artifacts, [], str(tmp_path))
    html = open(paths["html"]).read()
    assert html.count("data:image/png;base64,") == 4  # no training history: no training-curve plot
    assert "No training history given." in open(paths["markdown"]).read()


def test_unlabelled_clips_and_missing_modalities(eval_cfg, tmp_path):
    rows, model_facts = structured_rows()
    for name in ("label_action", "label_sounding"):
        rows[name] = np.array([None] * 60, dtype=object)
    rows["present_audio"][::2] = False
    metrics, artifacts = compute_metrics(rows, eval_cfg, model_facts)
    assert metrics["retrieval"]["video->audio"]["num_candidates"] == 30  # clips having both
    assert metrics["retrieval_action"] == {} and metrics["discovery"] == {}
    assert metrics["probe"] == {} and metrics["clustering"] == {}
    assert "table" not in metrics["codebook"] and metrics["codebook"]["active_codes"] > 0
    write_report(json_safe({"checkpoint": "ckpt", "data_path": "data", **metrics}), artifacts, [{"step": 1, "loss": 2.0}], str(tmp_path))
    assert (tmp_path / "plots" / "training_curves.png").exists()


def test_fac_rows_compare_vision_and_audio_in_s_va_and_text_in_s_vat(eval_cfg):
    """An MMV FAC model's rows: the action structure lives in S_va (`emb_va_*`), the coarse S_vat
    (`emb_*`) pairs each clip's video with its own narration but knows no action. Each section must
    read the space SPEC 8.6 names for it."""
    rows, model_facts = structured_rows()
    rng = np.random.default_rng(7)
    rows["emb_va_video"], rows["emb_va_audio"] = rows.pop("emb_video"), rows.pop("emb_audio")
    narration = rng.normal(size=(60, 8))
    rows["emb_text"] = narration.astype(np.float32)
    rows["emb_video"] = (narration + rng.normal(scale=0.05, size=(60, 8))).astype(np.float32)
    rows["emb_audio"] = rng.normal(size=(60, 8)).astype(np.float32)
    metrics, _ = compute_metrics(rows, eval_cfg, {"num_codes": 0})
    assert metrics["retrieval"]["video->text"]["R@1"] == 100.0  # S_vat: instance-aligned with text
    assert metrics["retrieval_action"]["video->audio"]["R@1"] > 80  # S_va: sounding clips share the action
    assert metrics["discovery"]["audio-video"]["roc_auc"] > 0.9  # S_va; S_vat's audio is noise
    assert metrics["discovery"]["audio-text"]["roc_auc"] < 0.8
    assert metrics["probe"]["video"]["top1"] > 90 and metrics["clustering"]["video"]["nmi"] > 90  # S_va
    assert metrics["probe"]["text"]["top1"] < 60  # text has S_vat only, where no action is planted
    assert metrics["clustering"]["fused"]["nmi"] < 50  # fused: where all three meet, S_vat
