"""Reproduction studies (mmdist/tune/study.py, jobs/reproduce.py): the table and claim logic against
hand-made evaluation results, the config checks, and one short study end to end."""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import subprocess
import sys

import pytest

from mmdist.tune.study import aggregate, check_study, judge_claims, markdown, metric_value
from tests.conftest import REPO, load_job_cfg

STUDY = {
    "name": "t",
    "paper": "a paper",
    "scale": "tiny",
    "scales": {"tiny": []},
    "seeds": [0, 1],
    "max_concurrent": 1,
    "common": [],
    "rows": {
        "a": {"label": "(a)", "overrides": [], "paper": {"R@1": 46.0}, "warm_start": "f"},
        "f": {"label": "(f)", "overrides": [], "paper": None, "warm_start": None},
    },
    "metrics": {
        "R@1": {"mean_of": ["retrieval.v->a.R@1", "retrieval.a->v.R@1"]},
        "MnR": {"mean_of": ["retrieval.v->a.MnR"], "higher_is_better": False},
        "share": {"mean_of": ["codebook.jointly_used_share"]},
    },
    "claims": [
        {"kind": "above", "text": "a beats f", "row": "a", "others": ["f"], "metric": "R@1"},
        {"kind": "above", "text": "a ranks lower", "row": "a", "others": ["f"], "metric": "MnR"},
        {"kind": "at_least", "text": "share >= 0.5", "row": "a", "metric": "share", "value": 0.5},
        {"kind": "below", "text": "f share < 0.1", "row": "f", "metric": "share", "value": 0.1},
    ],
}


def _metrics(r1_va, r1_av, mnr, share):
    return {"retrieval": {"v->a": {"R@1": r1_va, "MnR": mnr}, "a->v": {"R@1": r1_av}},
            "codebook": {"jointly_used_share": share} if share is not None else {}}


def test_metric_is_the_mean_of_its_paths_and_nan_when_absent():
    metrics = _metrics(10.0, 20.0, 5.0, 0.25)
    assert metric_value(metrics, STUDY["metrics"]["R@1"]) == 15.0
    assert math.isnan(metric_value(_metrics(1, 2, 3, None), STUDY["metrics"]["share"]))


def test_aggregate_and_claims_by_hand():
    runs = {
        "a": [_metrics(40, 50, 4.0, 0.6), _metrics(42, 52, 6.0, 0.3)],  # R@1 45, 47; share 0.6, 0.3
        "f": [_metrics(30, 30, 9.0, None), _metrics(34, 34, 7.0, None)],  # R@1 30, 34
    }
    table = aggregate(runs, STUDY)
    assert table["a"]["R@1"]["mean"] == 46.0
    assert table["a"]["R@1"]["std"] == pytest.approx(math.sqrt(2.0))  # sample std of 45, 47
    assert table["a"]["share"]["mean"] == pytest.approx(0.45)
    assert table["f"]["share"]["n"] == 0 and math.isnan(table["f"]["share"]["mean"])
    verdicts = {v["text"]: v for v in judge_claims(table, STUDY)}
    assert verdicts["a beats f"]["verdict"] == "holds"
    assert verdicts["a ranks lower"]["verdict"] == "holds"  # MnR 5 < 8: lower is better
    assert verdicts["share >= 0.5"]["verdict"] == "does not hold"  # 0.45
    assert verdicts["f share < 0.1"]["verdict"] == "cannot be judged"  # no codebook in (f)
    text = markdown(table, list(verdicts.values()), STUDY, [0, 1])
    assert "| (a) | 46 ± 1.4 [46.0]" in text
    assert "**does not hold**: share >= 0.5" in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("seeds"), "study.seeds: missing key"),
        (lambda s: s["rows"]["a"].update(lable="x"), "study.rows.a.lable: unknown key"),
        (lambda s: s.update(scale="huge"), "study.scale"),
        (lambda s: s["rows"]["a"].update(warm_start="nope"), "study.rows.a.warm_start"),
        (lambda s: s["rows"]["a"]["paper"].update(R9=1.0), "study.rows.a.paper.R9"),
        (lambda s: s["claims"][0].update(metric="nope"), "study.claims\\[0\\].metric"),
        (lambda s: s["claims"][2].pop("value"), "study.claims\\[2\\]"),
    ],
)
def test_bad_study_configs_name_the_key(change, message):
    study = copy.deepcopy(STUDY)
    change(study)
    with pytest.raises(ValueError, match=message):
        check_study(study)


@pytest.mark.parametrize("name", ["cmcm", "mc3", "mcn", "mmv", "smoke"])
def test_shipped_studies_are_valid(name):
    check_study(load_job_cfg("reproduce", (f"study={name}",))["study"])


@pytest.mark.slow
def test_smoke_study_end_to_end(tmp_path):
    """Two trials of a few steps (a baseline, then a row warm-started from its checkpoint): the table,
    the CSV and the claim lines are written, and the warm start really loaded the baseline."""
    run_dir = tmp_path / "study"
    command = [sys.executable, "jobs/reproduce.py", "study=smoke", f"run_dir={run_dir}",
               "world.train_clips=48", "world.test_clips=24"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = (run_dir / "study.md").read_text()
    assert "| baseline |" in text and "| warm-started from the baseline |" in text
    assert "[45.7]" in text  # the paper's figure beside ours
    claims = json.loads((run_dir / "claims.json").read_text())
    assert [c["text"] for c in claims] == ["warm beats base", "share >= 0.5"]
    assert all(c["verdict"] in ("holds", "does not hold") for c in claims)
    with open(run_dir / "study.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["row"], r["metric"]) for r in rows} == {(r, m) for r in ("base", "warm") for m in ("R@1", "jointly_used_share")}
    base_checkpoint = (run_dir / "trials" / "base-s0" / "checkpoint.txt").read_text().strip()
    warm_config = (run_dir / "trials" / "warm-s0" / "config.yaml").read_text()
    assert f"init_checkpoint: {base_checkpoint}" in warm_config
    assert os.path.exists(run_dir / "trials" / "warm-s0" / "eval" / "metrics.json")
