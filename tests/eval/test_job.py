"""End to end: a briefly trained mc3_vq model evaluates clearly above chance on a held-out world; its
untrained starting point stays near chance (fixtures in conftest.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import HELD_OUT_CLIPS

pytestmark = pytest.mark.slow
CHANCE_R1, CHANCE_MDR = 100 / HELD_OUT_CLIPS, HELD_OUT_CLIPS / 2
PAIRS = ("video->audio", "audio->video", "video->text", "text->video", "audio->text", "text->audio")
PLOTS = ("discovery_curves", "label_given_codeword", "codebook_map", "codeword_localisation", "training_curves")


def mean_over_pairs(metrics: dict, name: str) -> float:
    return float(np.mean([metrics["retrieval"][pair][name] for pair in PAIRS]))


def test_trained_model_is_clearly_above_chance(trained_eval):
    metrics = trained_eval.metrics
    assert metrics["num_clips"] == HELD_OUT_CLIPS and metrics["recipe"] == "mc3_vq" and metrics["dropped"] == {}
    assert set(metrics["retrieval"]) == set(PAIRS)
    assert mean_over_pairs(metrics, "R@1") > 3 * CHANCE_R1
    assert all(metrics["retrieval"][pair]["MdR"] < CHANCE_MDR / 2 for pair in PAIRS), metrics["retrieval"]
    discovery = metrics["discovery"]["audio-video"]
    assert discovery["roc_auc"] > 0.75 and discovery["pr_auc"] > discovery["positive_rate"] + 0.1
    # any clip of the same action counts: easier than finding the clip itself
    assert metrics["retrieval_action"]["text->video"]["R@5"] >= metrics["retrieval"]["text->video"]["R@5"]
    for section in ("probe", "clustering"):
        assert {"video", "audio", "text"} <= set(metrics[section])
    codebook = metrics["codebook"]
    assert codebook["active_codes"] > 10 and 1 < codebook["perplexity"] <= codebook["active_codes"]
    assert 0.0 <= codebook["jointly_used_share"] <= 1.0 and codebook["table"]


def test_untrained_model_is_near_chance(untrained_eval, trained_eval):
    untrained = untrained_eval.metrics
    assert "[evaluate] video->audio: R@1" in untrained_eval.stdout
    assert mean_over_pairs(untrained, "R@1") < 3 * CHANCE_R1
    assert mean_over_pairs(untrained, "MdR") > CHANCE_MDR / 2
    # Random features are not exactly chance at discovery: this init scores 0.72 on this world (other seeds
    # about 0.49), so the test asks for a loose band and for training to improve on its starting point.
    untrained_auc = untrained["discovery"]["audio-video"]["roc_auc"]
    assert 0.25 < untrained_auc < 0.8
    assert trained_eval.metrics["discovery"]["audio-video"]["roc_auc"] > untrained_auc + 0.05


def test_outputs_on_disk(trained_eval, untrained_eval):
    run_dir, metrics = trained_eval.run_dir, trained_eval.metrics
    assert metrics == json.loads((run_dir / "metrics.json").read_text())
    assert set(json.loads((run_dir / "curves.json").read_text())) == {"audio-video", "audio-text"}
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(PLOTS) and 'src="plots/' not in html  # self-contained
    markdown = (run_dir / "report.md").read_text()
    for plot in PLOTS:
        assert (run_dir / "plots" / f"{plot}.png").stat().st_size > 1000
        assert f"plots/{plot}.png" in markdown
    assert sum(1 for _ in (run_dir / "embeddings").glob("*.parquet")) >= 1
    # no training run given for the untrained checkpoint: no training curves, the rest is there
    assert (untrained_eval.run_dir / "report.html").read_text().count("data:image/png;base64,") == len(PLOTS) - 1


def test_evaluation_job_logs_into_the_mlflow_run_it_is_given(untrained_eval):
    from mmdist.tracking import mlflow_client

    uri, run_id = untrained_eval.mlflow
    client = mlflow_client(uri)
    logged = client.get_run(run_id).data.metrics
    metrics = untrained_eval.metrics
    assert logged["eval/retrieval/video_to_audio/R1"] == pytest.approx(metrics["retrieval"]["video->audio"]["R@1"])
    assert logged["eval/discovery/audio-video/roc_auc"] == pytest.approx(metrics["discovery"]["audio-video"]["roc_auc"])
    assert sorted(a.path for a in client.list_artifacts(run_id, "eval")) == ["eval/metrics.json", "eval/report.html", "eval/report.md"]
    assert f"logged to MLflow run {run_id}" in untrained_eval.stdout


def test_evaluation_job_console_is_quiet(untrained_eval):
    """No per-dataset Ray Data lines, no Ray deprecation warnings (issue 13, item 4)."""
    console = untrained_eval.stdout + untrained_eval.stderr
    for noise in ("Execution plan of Dataset", "execution finished in", "Progress bars disabled", "DeprecationWarning"):
        assert noise not in console, noise
