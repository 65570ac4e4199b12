"""`ray job submit` of jobs/train.py to a `ray start --head` cluster on 127.0.0.1, token auth left on.

What a user does (README "Running on a cluster"): start a head, then
`RAY_AUTH_MODE=token ray job submit --working-dir . -- python jobs/train.py ...`. The job's console
(what `ray job submit` streams back) is one `[train]` line per report, without the noise Ray, Ray Data
and DeepSpeed printed before mmdist.ray_setup quieted them; the run directory gets TensorBoard events
and an MLflow run holding the same loss curve as metrics.json.
"""

from __future__ import annotations

import json
import re
import sys

import pytest

from mmdist.tracking import mlflow_client, read_record
from tests.ray_head import ray_head, submit
from tests.test_tracking import read_scalars

pytestmark = pytest.mark.slow
# lines the libraries printed per report, per rank, per epoch or per worker (issue 13, item 4)
NOISE = (
    "Reporting training result",          # Ray Train, every report, every rank
    "Execution plan of Dataset",          # Ray Data, every epoch
    "execution finished in",              # Ray Data, every epoch
    "Starting execution of Dataset",      # Ray Data, every epoch
    "Progress bars disabled",             # Ray Data
    "DeprecationWarning",                 # ExecutionOptions.exclude_resources (Ray Train's default DataConfig)
    "Attempting to get learning rate",    # DeepSpeed's WarmupCosineLR constructor
    "No CUDA runtime is found",           # torch's cpp_extension, imported by DeepSpeed's op builder
)


def test_ray_job_submit_runs_training_with_token_auth(synthetic_dir, tmp_path):
    run_dir = tmp_path / "run"
    with ray_head(tmp_path / "head.log", "--num-cpus=4") as cluster:
        done = submit(
            cluster, sys.executable, "jobs/train.py",
            f"data.path={synthetic_dir}", f"run_dir={run_dir}",
            "data.batch_size=8", "trainer.max_steps=2", "trainer.report_every=1", "trainer.checkpoint_every=2",
            "logging.mlflow.enabled=true",
        )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "succeeded" in output, output[-4000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [entry["step"] for entry in metrics["history"]] == [1, 2]
    losses = {entry["step"]: entry["loss"] for entry in metrics["history"]}

    # the console: one progress line per report, none of the known noise
    assert len(re.findall(r"\[train\] step \d+/2 ", output)) == 2, output[-4000:]
    noisy = [line for line in output.splitlines() if any(pattern in line for pattern in NOISE)]
    assert not noisy, "\n".join(noisy)

    # TensorBoard events and the MLflow run hold the loss curve of metrics.json
    assert read_scalars(run_dir / "tensorboard")["loss/total"] == pytest.approx(losses)
    record = read_record(str(run_dir / "mlflow_run.json"))
    assert metrics["mlflow"] == record and record["tracking_uri"] == f"file://{run_dir}/mlruns"
    history = mlflow_client(record["tracking_uri"]).get_metric_history(record["run_id"], "loss/total")
    assert {point.step: point.value for point in history} == pytest.approx(losses)
    assert f"[train] MLflow run {record['run_id']}" in output
