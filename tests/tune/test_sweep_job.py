"""`python jobs/sweep.py` end to end on a local Ray: 2 trials of the tiny model, killed mid-way
(SIGKILL to the whole process group, as a lost driver) and started again, which must resume the same
trials (Tuner.restore, each trial from its own training checkpoint), write the results table and the
best trial's overrides, and evaluate the best checkpoint as jobs/evaluate.py does (in the sweep's driver).

Compared against: Tune's own per-trial JSON logs, the config the trainer stored in each trial's
checkpoint, the search space of configs/sweep/smoke.yaml, and Hydra composing `train` with the
written overrides into exactly the config the best trial trained with."""

from __future__ import annotations

import csv
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mmdist.models.checkpoint import load_run_config
from tests.conftest import REPO, load_job_cfg

pytestmark = pytest.mark.slow
METRIC = "r1_audio_video"
MAX_STEPS = 3


def sweep_command(data_path: str, run_dir: Path) -> list[str]:
    return [
        sys.executable, "jobs/sweep.py", "sweep=smoke", "sweep.num_samples=2", f"trainer.max_steps={MAX_STEPS}",
        f"data.path={data_path}", f"run_dir={run_dir}",
        "data.batch_size=8", "trainer.report_every=1", "trainer.checkpoint_every=1", "trainer.warmup_steps=1",
        # at the end, jobs/evaluate.py's work on the best checkpoint, on the sweep's own Ray (no report: quicker)
        "sweep.final_eval.enabled=true", "sweep.final_eval.overrides=['eval.report.enabled=false','eval.extract.actors=1']",
    ]


def saved_trial_ids(run_dir: Path) -> set[str]:
    """Trial ids in Tune's latest saved experiment state (what Tuner.restore will read)."""
    states = sorted(glob.glob(str(run_dir / "tune" / "smoke" / "experiment_state-*.json")))
    if not states:
        return set()
    try:
        state = json.loads(Path(states[-1]).read_text())
    except json.JSONDecodeError:  # being written
        return set()
    return {json.loads(trial[0])["trial_id"] for trial in state["trial_data"]}


def training_checkpoints(run_dir: Path) -> list[str]:
    """Checkpoints Ray Train has registered (its snapshot is what a restarted run resumes from)."""
    return glob.glob(str(run_dir / "trials" / "*" / "checkpoints" / "*" / "checkpoint_manager_snapshot.json"))


def wait_for(condition, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the sweep exited early ({process.returncode}):\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for the sweep:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def test_interrupted_sweep_resumes_and_writes_table_and_best_overrides(synthetic_dir, tmp_path, monkeypatch):
    run_dir = tmp_path / "sweep"
    command = sweep_command(synthetic_dir, run_dir)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    first_log = tmp_path / "first.log"
    with open(first_log, "wb") as log:
        first = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # interrupted once both trials are in Tune's saved state and a training checkpoint exists
        wait_for(lambda: len(saved_trial_ids(run_dir)) == 2 and training_checkpoints(run_dir), first, first_log, 400)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    trial_ids = saved_trial_ids(run_dir)
    assert not (run_dir / "sweep_results.csv").exists()

    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-3000:]
    assert "[sweep] resuming" in output
    assert "[resume] from step" in output  # a trial continued from its training checkpoint

    with open(run_dir / "sweep_results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["trial_id"] for row in rows} == trial_ids  # the same trials, not a new experiment
    smoke = load_job_cfg("sweep", ("sweep=smoke", "data.path=x"))["sweep"]["space"]
    # ASHA (grace 2 steps, factor 2) may stop the worse trial at step 2; none fails, one runs to the end
    assert {row["status"] for row in rows} <= {"done", "stopped early"}
    assert any(row["status"] == "done" and int(row["step"]) == MAX_STEPS for row in rows)
    for row in rows:
        assert int(row["model.codebook.num_codes"]) in smoke["model"]["codebook"]["num_codes"]["choice"]
        assert float(row["recipe.cmcm_alpha"]) in smoke["recipe"]["cmcm_alpha"]["choice"]
        for modality in ("video", "text"):
            low, high = smoke["recipe"]["consensus_alphas"][modality]["loguniform"]
            assert low <= float(row[f"recipe.consensus_alphas.{modality}"]) <= high
        # the metric columns are the trial's reports, as Tune's own JSON log recorded them
        reports = [json.loads(line) for line in (run_dir / "tune" / "smoke" / row["trial_id"] / "result.json").open()]
        assert float(row[METRIC]) == pytest.approx(reports[-1][METRIC])
        assert float(row[f"{METRIC}_best"]) == pytest.approx(max(report[METRIC] for report in reports))
        # the checkpoint column is the trial's last checkpoint, which the trainer wrote with the trial's values
        assert row["checkpoint"] == [r["checkpoint_path"] for r in reports if r.get("checkpoint_path")][-1]
        trained = load_run_config(row["checkpoint"])
        assert trained["model"]["codebook"]["num_codes"] == int(row["model.codebook.num_codes"])
        assert trained["recipe"]["cmcm_alpha"] == pytest.approx(float(row["recipe.cmcm_alpha"]))
        assert trained["recipe"]["consensus_alphas"]["video"] == pytest.approx(float(row["recipe.consensus_alphas.video"]))
    assert float(rows[0][METRIC]) >= float(rows[1][METRIC])  # best first
    table_rows = [line for line in (run_dir / "sweep_results.md").read_text().splitlines() if line.startswith("| ")][2:]
    assert [line.split(" | ")[0].removeprefix("| ") for line in table_rows] == [row["trial_id"] for row in rows]

    # the overrides rerun the best trial: composing `train` with them gives the config it trained with
    overrides = yaml.safe_load((run_dir / "best_overrides.yaml").read_text())
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        rerun = OmegaConf.to_container(compose("train", overrides=overrides), resolve=True)
    best = yaml.safe_load((run_dir / "trials" / rows[0]["trial_id"] / "config.yaml").read_text())
    for config in (rerun, best):
        config.pop("run_dir"), config["trainer"].pop("run_name")
    assert without_redacted(rerun, best) == best

    # the final evaluation ran on the best checkpoint and wrote the evaluation job's metrics
    evaluation = json.loads((run_dir / "best_eval" / "metrics.json").read_text())
    assert {"video->audio", "audio->video"} <= set(evaluation["retrieval"])
    assert "[sweep] evaluating the best checkpoint" in output and f"checkpoint={rows[0]['checkpoint']}" in output

    # MLflow (file store) has a run per trial with its hyperparameters; TensorBoard events per trial
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads its file store only when told
    client = mlflow.tracking.MlflowClient(tracking_uri=f"file://{run_dir / 'mlruns'}")
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id])
    logged = {run.data.params["model.codebook.num_codes"] for run in runs}
    assert len(runs) >= 2 and logged == {row["model.codebook.num_codes"] for row in rows}
    for trial_id in trial_ids:
        assert glob.glob(str(run_dir / "tune" / "smoke" / trial_id / "events.out.tfevents.*"))


def without_redacted(config: dict, redacted: dict) -> dict:
    """`config` with "***" wherever the written (redacted) config has it: those values are not on disk."""
    return {
        key: "***" if redacted.get(key) == "***" else
        without_redacted(value, redacted[key]) if isinstance(value, dict) and isinstance(redacted.get(key), dict) else value
        for key, value in config.items()
    }
