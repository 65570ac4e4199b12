"""The results table: ranking, one row per Tune Result, CSV / Markdown writing, checkpoint URIs.

Compared against: hand-worked rankings, real `ray.tune.Result` objects built from a known report
history, and the CSV read back with the csv module."""

from __future__ import annotations

import csv
import math

import pandas as pd
import pytest
from ray.tune import Result

from mmdist.train.fit import checkpoint_uri
from mmdist.tune.results import (
    STATUS_DONE,
    STATUS_ERROR,
    STATUS_STOPPED,
    best_row,
    markdown_table,
    rank_rows,
    trial_row,
    write_csv,
)

ROWS = [
    {"trial_id": "a", "m": 0.2},
    {"trial_id": "b", "m": math.nan},
    {"trial_id": "c", "m": 0.9},
    {"trial_id": "d", "m": None},
    {"trial_id": "e", "m": 0.5},
]


def ids(rows):
    return [row["trial_id"] for row in rows]


def test_ranking_puts_the_best_first_and_unscored_trials_last():
    assert ids(rank_rows(ROWS, "m", "max")) == ["c", "e", "a", "b", "d"]
    assert ids(rank_rows(ROWS, "m", "min")) == ["a", "e", "c", "b", "d"]
    assert best_row(rank_rows(ROWS, "m", "max"), "m")["trial_id"] == "c"
    with pytest.raises(ValueError, match="sweep.mode"):
        rank_rows(ROWS, "m", "maximum")


def test_no_scored_trial_is_an_error_that_names_the_metric():
    with pytest.raises(RuntimeError, match="'m'.*b: error"):
        best_row([{"trial_id": "b", "status": "error", "m": math.nan}], "m")


def result(history: list[dict], error=None, config=None) -> Result:
    """A Tune Result as Tune builds it: the last report (with the trial's config) + the report history."""
    frame = pd.DataFrame(history)
    metrics = dict(history[-1], config=config or {})
    return Result(metrics=metrics, checkpoint=None, error=error, path="/s/exp/t_00001", metrics_dataframe=frame)


def test_a_row_reads_last_and_best_metric_and_the_last_checkpoint():
    history = [
        {"step": 2, "loss": 3.0, "r1": 0.10, "trial_id": "t1"},
        {"step": 4, "loss": 2.5, "r1": 0.40, "trial_id": "t1", "checkpoint_path": "b/ckpt_4"},
        {"step": 6, "loss": 2.0, "r1": 0.30, "trial_id": "t1"},
    ]
    row = trial_row(result(history, config={"recipe.cmcm_alpha": 1.0}), ["recipe.cmcm_alpha"], "r1", "max", max_steps=6)
    assert row["recipe.cmcm_alpha"] == 1.0
    assert row["trial_id"] == "t1" and row["status"] == STATUS_DONE and row["step"] == 6
    assert row["r1"] == 0.30 and row["r1_best"] == 0.40 and row["loss"] == 2.0
    assert row["checkpoint"] == "b/ckpt_4"
    assert row["r1_best"] == max(entry["r1"] for entry in history)
    stopped = trial_row(result(history[:1]), [], "r1", "min", max_steps=6)
    assert stopped["status"] == STATUS_STOPPED and stopped["checkpoint"] == "" and stopped["r1_best"] == 0.10
    failed = trial_row(result(history, error=RuntimeError("boom")), [], "r1", "max", max_steps=6)
    assert failed["status"] == STATUS_ERROR


def test_validation_metric_reported_only_on_some_steps():
    # val_* comes every other report: the last *reported* value counts, not the missing one
    history = [
        {"step": 2, "loss": 3.0, "val": 0.2, "trial_id": "t"},
        {"step": 4, "loss": 2.0, "trial_id": "t"},
    ]
    row = trial_row(result(history), [], "val", "max", max_steps=4)
    assert row["val"] == 0.2 and row["val_best"] == 0.2


def test_csv_and_markdown_hold_every_row_and_column(tmp_path):
    rows = [
        {"trial_id": "a", "recipe.cmcm_alpha": 0.1, "m": 0.25, "checkpoint": "/c/a"},
        {"trial_id": "b", "recipe.cmcm_alpha": 1.0, "m": math.nan, "checkpoint": ""},
    ]
    path = tmp_path / "table.csv"
    write_csv(rows, str(path))
    with open(path, newline="") as handle:
        read = list(csv.DictReader(handle))
    assert [row["trial_id"] for row in read] == ["a", "b"]
    assert float(read[0]["recipe.cmcm_alpha"]) == 0.1 and float(read[0]["m"]) == 0.25
    assert math.isnan(float(read[1]["m"])) and read[1]["checkpoint"] == ""
    lines = markdown_table(rows).splitlines()
    assert lines[0] == "| trial_id | recipe.cmcm_alpha | m | checkpoint |"
    assert len(lines) == 2 + len(rows) and lines[2].startswith("| a | 0.1 | 0.25 |")


def test_checkpoint_uri_puts_the_storage_scheme_back():
    assert checkpoint_uri("bucket/ckpt/run/checkpoint_1", "s3://bucket/ckpt") == "s3://bucket/ckpt/run/checkpoint_1"
    assert checkpoint_uri("s3://bucket/x", "s3://bucket") == "s3://bucket/x"
    assert checkpoint_uri("/runs/x/checkpoint_1", None) == "/runs/x/checkpoint_1"
    assert checkpoint_uri("/runs/x/checkpoint_1", "file:///runs") == "/runs/x/checkpoint_1"
    assert checkpoint_uri("", "s3://bucket") == ""
