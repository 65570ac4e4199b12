"""`ray job submit` of jobs/train.py to a `ray start --head` cluster on 127.0.0.1, token auth left on.

What a user does (README "Running on a cluster"): start a head, then
`RAY_AUTH_MODE=token ray job submit --working-dir . -- python jobs/train.py ...`.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.ray_head import ray_head, submit

pytestmark = pytest.mark.slow


def test_ray_job_submit_runs_training_with_token_auth(synthetic_dir, tmp_path):
    run_dir = tmp_path / "run"
    with ray_head(tmp_path / "head.log", "--num-cpus=4") as cluster:
        done = submit(
            cluster, sys.executable, "jobs/train.py",
            f"data.path={synthetic_dir}", f"run_dir={run_dir}",
            "data.batch_size=8", "trainer.max_steps=2", "trainer.report_every=1", "trainer.checkpoint_every=2",
        )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "succeeded" in output, output[-4000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [entry["step"] for entry in metrics["history"]] == [1, 2]
